//! The wire format of the Modelvault HTTP API (`docs/API.md`): every JSON
//! request and response body, the query strings, the error body, the
//! key-job view, and the building of API paths.
//!
//! Invariant: the wire format is defined here and only here. The server
//! serializes these types and the client deserializes the same ones, so the
//! two agree by construction; neither side declares a body of its own, and
//! a change to a field here is a change to the API. Stored records are not
//! wire types: the server converts between them and these.
//!
//! The crate depends on serde, serde_json and chrono only. With the
//! `openapi` feature (which the server enables) the types also derive
//! `utoipa::ToSchema` for `GET /v1/openapi.json`.

#![forbid(unsafe_code)]

mod access;
mod approvals;
mod audit;
mod error;
mod keys;
mod models;
pub mod paths;
mod policies;
mod queries;
mod release;
mod review;

pub use access::*;
pub use approvals::*;
pub use audit::*;
pub use error::*;
pub use keys::*;
pub use models::*;
pub use policies::*;
pub use queries::*;
pub use release::*;
pub use review::*;
