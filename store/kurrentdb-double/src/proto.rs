//! The gRPC messages and service traits generated at build time from the `kurrentdb` crate's
//! `.proto` files (see `build.rs`). Module paths follow the protobuf packages, as the
//! generated code expects.

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub, dead_code)]

pub mod event_store {
    pub mod client {
        include!(concat!(env!("OUT_DIR"), "/event_store.client.rs"));

        pub mod streams {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.streams.rs"));
        }

        pub mod server_features {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.server_features.rs"));
        }
    }
}

pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}
