//! Katib's gRPC API (package `api.v1.beta1`), generated from `proto/api.proto` at build time.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("api.v1.beta1");
