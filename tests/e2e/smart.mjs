// Drives fhirclient (npm) in headless Chromium through a standalone launch (the login page's
// patient picker, clicked) and an EHR launch against a running Fjord; prints one JSON line per
// flow with what the app read. Run by tests/it/e2e.rs, which starts Fjord and checks the lines.
//
// Environment: FHIR_BASE (the tenant's base URL), APP_PORT (where to serve the app), CLIENT_ID,
// LAUNCH (a `fjord launch` parameter), PICK_PATIENT and PICK_USER (what to pick on the login
// page), CHROMIUM (optional).

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const env = name => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("FHIR_BASE");
const port = Number(env("APP_PORT"));
const clientId = env("CLIENT_ID");
const launch = env("LAUNCH");
const pick = env("PICK_PATIENT");
const user = env("PICK_USER");

const files = {
  "/launch.html": [path.join(here, "app", "launch.html"), "text/html"],
  "/index.html": [path.join(here, "app", "index.html"), "text/html"],
  "/fhir-client.js": [
    path.join(here, "node_modules", "fhirclient", "build", "fhir-client.min.js"),
    "text/javascript",
  ],
};
const server = http.createServer((req, res) => {
  const file = files[new URL(req.url, "http://app").pathname];
  if (!file) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "content-type": file[1] }).end(fs.readFileSync(file[0]));
});
await new Promise(resolve => server.listen(port, "127.0.0.1", resolve));
const app = `http://127.0.0.1:${port}`;

// The flags keep Chromium off the network it cannot reach here.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

async function run(flow, url, patientToPick) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = [];
  page.on("framenavigated", frame => {
    if (frame === page.mainFrame()) seen.push(new URL(frame.url()).pathname);
  });
  const messages = [];
  page.on("console", message => messages.push(message.text()));
  try {
    await page.goto(url);
    if (patientToPick) {
      await page.waitForSelector("#patient", { timeout: 20000 });
      await page.selectOption("#patient", patientToPick);
      await page.selectOption("#fhir_user", user);
      await page.click("#approve");
    }
    await page.waitForFunction(() => document.getElementById("result")?.textContent, null, {
      timeout: 30000,
    });
  } catch (error) {
    const text = await page.textContent("body").catch(() => "");
    throw new Error(`${flow}: ${error.message}\nat ${page.url()}\n${text}\n${messages.join("\n")}`);
  }
  const result = JSON.parse(await page.textContent("#result"));
  console.log(JSON.stringify({ flow, pages: seen, ...result }));
  await context.close();
}

let failed = false;
const query = params => new URLSearchParams(params).toString();
try {
  await run(
    "standalone",
    `${app}/launch.html?${query({
      client: clientId,
      scope: "launch/patient openid fhirUser patient/*.rs offline_access",
      server: base,
    })}`,
    pick
  );
  await run(
    "ehr",
    `${app}/launch.html?${query({
      client: clientId,
      scope: "launch openid fhirUser patient/*.rs",
      iss: base,
      launch,
    })}`,
    null
  );
} catch (error) {
  console.error(error);
  failed = true;
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
