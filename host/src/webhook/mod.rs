//! Incoming webhooks: from the networks allowed ([`allow`]), verified on
//! the raw body ([`verify`]), senders' handshakes answered by the host
//! ([`handshake`]), written to a durable inbox and deduplicated by delivery id ([`inbox`]) before the
//! sender gets its 2xx, then handed to the pipeline.

pub mod allow;
pub mod handshake;
pub mod inbox;
pub mod signed;
pub mod verify;
