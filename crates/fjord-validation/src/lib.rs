//! Validation of FHIR resources for Fjord.
//!
//! So far the Norwegian identifier rules (`norwegian`): which values are valid for the
//! national identifier systems (fødselsnummer, D-nummer, felles hjelpenummer, HPR-nummer,
//! organisasjonsnummer, RESH-id), check digits included. Pure; profiles, bindings and the
//! tenant's validation mode come on top of it.

pub mod norwegian;

pub use norwegian::{check_identifier, IdentifierError, IdentifierKind, IdentifierRules};
