//! The desired state: a directory of YAML documents turned into a typed, validated
//! [`load::DesiredState`]. Nothing here talks to Docker or reads the clock, so a bad
//! edit can never disturb what is running.

pub mod compose;
pub mod diag;
pub mod load;
pub mod model;
pub mod schedule;
pub mod schema;
pub mod validate;
pub mod validate_aws;
pub mod yaml;
