"""SMART Backend Services with the PyPI `fhirclient`: a system signs a client assertion with
its own key and reads Observations with the token it gets. Run by tests/it/e2e.rs.

    backend.py keygen DIR   writes DIR/key.pem (RSA) and DIR/jwks.json (its public key, RS384)
    backend.py run          FHIR_BASE, CLIENT_ID, KEY_DIR in the environment; prints JSON
"""

import json
import os
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fhirclient import client
from fhirclient.models.observation import Observation

KID = "e2e-backend-key"


def keygen(directory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "RS384", "use": "sig"})
    with open(os.path.join(directory, "jwks.json"), "w") as f:
        json.dump({"keys": [public]}, f)


def run():
    base = os.environ["FHIR_BASE"]
    client_id = os.environ["CLIENT_ID"]
    with open(os.path.join(os.environ["KEY_DIR"], "key.pem"), "rb") as f:
        key = f.read()
    # The assertion's audience is the token endpoint, which discovery names.
    configuration = requests.get(base + "/.well-known/smart-configuration", timeout=10).json()
    token_endpoint = configuration["token_endpoint"]
    assertion = jwt.encode(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": token_endpoint,
            "exp": int(time.time()) + 240,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithm="RS384",
        headers={"kid": KID, "typ": "JWT"},
    )
    smart = client.FHIRClient(
        settings={
            "app_id": client_id,
            "api_base": base,
            "jwt_token": assertion,
            "scope": "system/Observation.rs system/Patient.rs",
        }
    )
    smart.wants_patient = False
    smart.prepare()
    smart.authorize()
    found = Observation.where(struct={"_count": "100"}).perform_resources(smart.server)
    print(
        json.dumps(
            {
                "token_endpoint": token_endpoint,
                "authorized": smart.server.auth.access_token is not None,
                "observations": sorted("Observation/" + o.id for o in found),
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["keygen"]:
        keygen(sys.argv[2])
    else:
        run()
