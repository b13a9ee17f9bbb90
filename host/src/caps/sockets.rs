//! `wasi:sockets`: linked, so a guest whose language runtime imports it
//! loads, and never given. The host's own client is the only way out
//! (`http`, a grant in grants.toml). The calls that would open a socket or
//! look up a name are replaced here: each attempt is refused as
//! `access-denied`, as WASI's own lock-down answers, and audited as a
//! denied use, so a plugin probing for the network leaves a trace.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::ResolveAddressStream;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::{Network, TcpSocket, UdpSocket};

use crate::audit::{AuditEvent, Decision};
use crate::sandbox::StoreState;

/// The `wasi:sockets` version wasmtime-wasi links: its functions are
/// replaced under the names it defined them by. Under another name they
/// would stand beside WASI's own, unused: an upgrade of wasmtime-wasi that
/// moves the version fails tests/sandbox.rs (no `wasi-sockets` rows).
const VERSION: &str = "0.2.12";

/// Why every attempt is refused, as the audit row and the log say.
const WHY: &str = "WASI sockets are never granted: a plugin reaches the network through the http capability, as grants.toml allows";

/// Replaces the functions of `wasi:sockets` that would reach the network
/// in `linker` (which already holds WASI's own) with refusals that audit.
pub fn refuse_in(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    refuse_socket::<TcpSocket>(linker, "tcp-create-socket", "create-tcp-socket")?;
    refuse_socket::<UdpSocket>(linker, "udp-create-socket", "create-udp-socket")?;
    linker
        .instance(&format!("wasi:sockets/ip-name-lookup@{VERSION}"))?
        .func_wrap(
            "resolve-addresses",
            |mut store: StoreContextMut<'_, StoreState>,
             (_network, name): (Resource<Network>, String)| {
                refuse(store.data_mut(), "resolve-addresses", &name);
                Ok((Err::<Resource<ResolveAddressStream>, _>(
                    ErrorCode::AccessDenied,
                ),))
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Replaces `function` of `interface`, which makes a socket of type `S`
/// for an address family, with a refusal.
fn refuse_socket<S: 'static>(
    linker: &mut Linker<StoreState>,
    interface: &str,
    function: &'static str,
) -> wasmtime::Result<()> {
    linker
        .instance(&format!("wasi:sockets/{interface}@{VERSION}"))?
        .func_wrap(
            function,
            move |mut store: StoreContextMut<'_, StoreState>, (family,): (IpAddressFamily,)| {
                refuse(store.data_mut(), function, family_name(family));
                Ok((Err::<Resource<S>, _>(ErrorCode::AccessDenied),))
            },
        )
}

fn family_name(family: IpAddressFamily) -> &'static str {
    match family {
        IpAddressFamily::Ipv4 => "ipv4",
        IpAddressFamily::Ipv6 => "ipv6",
    }
}

/// Audits one refused attempt (within the call's denial budget) and logs it.
fn refuse(state: &mut StoreState, action: &str, target: &str) {
    if state.audit.record(AuditEvent::new(
        &state.plugin,
        "wasi-sockets",
        action,
        target,
        Decision::Denied,
        WHY.to_string(),
    )) {
        tracing::warn!(plugin = %state.plugin.label(), "wasi:sockets {action} {target} refused: {WHY}");
    }
}
