//! Free loopback ports.
//!
//! A port is probed by binding port 0 and reading what the kernel picked.
//! The probe's listener closes before the server binds, so another process
//! can take the port in between; [`server`](crate::server) retries a server
//! whose port was taken. Within this process no port is handed out twice
//! (the set of ports handed out is process-wide), so servers started on
//! several threads at once never race each other for one.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, IoContext, Result};

/// Redis Cluster nodes also listen on their port + 10000: the cluster bus.
pub const CLUSTER_BUS_OFFSET: u16 = 10000;

/// How many ports the kernel is asked for before giving up.
const PROBES: usize = 1000;

static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that is free now and was not handed out before.
pub fn free_port() -> Result<u16> {
    pick(false)
}

/// A free port whose cluster bus port (port + 10000) is free too, neither of
/// which collides with a port (or bus port) handed out before.
pub fn free_cluster_port() -> Result<u16> {
    pick(true)
}

fn pick(cluster: bool) -> Result<u16> {
    for _ in 0..PROBES {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .io(|| "failed to probe a free port".into())?;
        let port = listener
            .local_addr()
            .io(|| "failed to probe a free port".into())?
            .port();
        let mut guard = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = guard.get_or_insert_with(HashSet::new);
        if taken.contains(&port) {
            continue;
        }
        if cluster {
            let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
                continue;
            };
            // Both listeners are held at once, so both ports were free at the
            // same moment.
            if taken.contains(&bus) || TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_err() {
                continue;
            }
            taken.insert(bus);
        }
        taken.insert(port);
        return Ok(port);
    }
    Err(Error::Setup(format!(
        "no free port{} on 127.0.0.1 after {PROBES} probes",
        if cluster {
            " with a free cluster bus port"
        } else {
            ""
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let port = free_port().expect("a free port");
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }

    #[test]
    fn a_cluster_port_comes_with_a_free_bus_port_that_is_reserved_too() {
        let port = free_cluster_port().expect("a free cluster port");
        let bus = port + CLUSTER_BUS_OFFSET;
        let guard = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = guard.as_ref().expect("ports were handed out");
        assert!(taken.contains(&port) && taken.contains(&bus));
    }
}
