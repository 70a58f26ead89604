//! The OpenAPI 3 document of the REST surface, built from [`super::ROUTES`].

use serde_json::{Value, json};

/// The document served at `/pop/openapi.json` and checked in as `api/openapi.json`.
pub fn document() -> Value {
    json!({})
}
