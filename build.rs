//! Compiles the protobuf schemas with protox: no `protoc` needed.
//!
//! - `proto/api.proto` (Katib's DB manager and early-stopping messages): the library gets the messages and the
//!   clients (`OUT_DIR/api.v1.beta1.rs`). The servers are generated apart (`OUT_DIR/servers/api.v1.beta1.rs`,
//!   referring to the library's messages), for the tests' fake Katib services only: the binary carries no gRPC
//!   server code.
//! - `proto/tensorboard/` (TensorFlow's `Event` and what it needs, package `tensorflow`): messages only
//!   (`OUT_DIR/tensorflow.rs`), for [`trialtail::source::tfevents::proto`].

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/api.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds.clone())?;
    let servers = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".api.v1.beta1", "::trialtail::katib::api")
        .out_dir(&servers)
        .compile_fds(fds)?;
    let events = protox::compile(["tensorflow/core/util/event.proto"], ["proto/tensorboard"])?;
    tonic_prost_build::configure().build_client(false).build_server(false).compile_fds(events)?;
    Ok(())
}
