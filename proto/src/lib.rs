//! Cocon's wire contracts: one protobuf package per service and version, plus the event schemas.
//!
//! The services never import each other; they share only these types.

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("cocon.auth.v1");
    }
}

pub mod documents {
    pub mod v1 {
        tonic::include_proto!("cocon.documents.v1");
    }
}

pub mod files {
    pub mod v1 {
        tonic::include_proto!("cocon.files.v1");
    }
    mod json;
}

pub mod jobs {
    pub mod v1 {
        tonic::include_proto!("cocon.jobs.v1");
    }
}

pub mod notifications {
    pub mod v1 {
        tonic::include_proto!("cocon.notifications.v1");
    }
}

pub mod sharing {
    pub mod v1 {
        tonic::include_proto!("cocon.sharing.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("cocon.events.v1");
    }
}
