//! Compiles proto/*.proto with a vendored protoc so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    for proto in [
        "proto/raft.proto",
        "proto/meta.proto",
        "proto/storage.proto",
        "proto/transport.proto",
        "proto/command.proto",
        "proto/kv.proto",
        "proto/admin.proto",
    ] {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        // Payloads are shared, not copied, as they travel from proposal to log, messages
        // and apply.
        .bytes(".raftpb.Entry.data")
        .bytes(".raftpb.Snapshot.data")
        .compile_protos(&["proto/raft.proto", "proto/meta.proto"], &["proto"])?;
    // Files that import raft.proto refer to its types where the crate keeps them.
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .extern_path(".raftpb", "crate::proto::raftpb")
        .extern_path(".metapb", "crate::proto::metapb")
        // Keys and values are sliced out of the entry they arrive in, not copied.
        .bytes(".commandpb")
        .compile_protos(&["proto/storage.proto", "proto/command.proto"], &["proto"])?;
    // The store-to-store service: its client and server both live in src/transport.
    tonic_prost_build::configure()
        .extern_path(".raftpb", "crate::proto::raftpb")
        .extern_path(".metapb", "crate::proto::metapb")
        // Snapshot chunks are handed to the file as received, not copied.
        .bytes(".transportpb.SnapshotChunk.data")
        .compile_protos(&["proto/transport.proto"], &["proto"])?;
    // The client APIs: served by src/server, called by src/client. Compiled together:
    // tonic generates the services of every file it is given, imported ones included,
    // so admin.proto alone would rewrite kv.proto's module with its service only.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Served by gRPC reflection, so grpcurl needs no .proto files.
        .file_descriptor_set_path(out_dir.join("client_api_descriptor.bin"))
        .extern_path(".metapb", "crate::proto::metapb")
        .extern_path(".commandpb", "crate::proto::commandpb")
        // Keys and values go to and from the store without a copy.
        .bytes(".kvpb")
        .bytes(".adminpb")
        .compile_protos(&["proto/kv.proto", "proto/admin.proto"], &["proto"])?;
    Ok(())
}
