//! Free loopback ports.
//!
//! Ports are handed out from below the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`), never from it: the kernel gives the
//! local end of every outgoing connection a port from that range, so a port
//! probed there by binding port 0 could be taken by a client's connection
//! (a test's own health check, say) between the probe and the server's bind,
//! and the server would fail to start. Below the range only listeners take
//! ports. Each candidate is still probed by binding it, and the probe's
//! listener closes before the server binds, so another process can take the
//! port in between; [`server`](crate::server) retries a server whose port
//! was taken. Within this process no port is handed out twice (the set of
//! ports handed out is process-wide), so servers started on several threads
//! at once never race each other for one; each process starts its walk at
//! a random place, so that two test processes seldom walk the same ports.
//! Where the ephemeral range leaves too little room below it, the kernel's
//! pick of port 0 is the fall-back.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, IoContext, Result};

/// Redis Cluster nodes also listen on their port + 10000: the cluster bus.
pub const CLUSTER_BUS_OFFSET: u16 = 10000;

/// How many ports are probed before giving up.
const PROBES: usize = 1000;

/// The lowest port handed out: well above the ports services run on.
const LOWEST: u16 = 10000;

/// The fewest ports below the ephemeral range for the walk to use them.
const ROOM: u16 = 2000;

/// Where the kernel's ephemeral range starts when it cannot be read: the
/// default of Linux.
const EPHEMERAL_DEFAULT: u16 = 32768;

/// The ports handed out, and where the walk goes on from.
struct Taken {
    ports: HashSet<u16>,
    next: u16,
}

static TAKEN: Mutex<Option<Taken>> = Mutex::new(None);

/// A loopback port that is free now and was not handed out before.
pub fn free_port() -> Result<u16> {
    pick(false)
}

/// A free port whose cluster bus port (port + 10000) is free too, neither of
/// which collides with a port (or bus port) handed out before.
pub fn free_cluster_port() -> Result<u16> {
    pick(true)
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_DEFAULT)
}

/// The ports the walk may hand out (bus ports included, for a cluster
/// port), or `None` where there is too little room below the ephemeral
/// range.
fn walk_range(cluster: bool) -> Option<(u16, u16)> {
    walk_below(ephemeral_start(), cluster)
}

/// [`walk_range`] for an ephemeral range that starts at `end`.
fn walk_below(end: u16, cluster: bool) -> Option<(u16, u16)> {
    let end = if cluster {
        end.checked_sub(CLUSTER_BUS_OFFSET)?
    } else {
        end
    };
    (end >= LOWEST.saturating_add(ROOM)).then_some((LOWEST, end))
}

/// The next candidate: the next port of the walk, or the kernel's pick.
fn candidate(taken: &mut Taken, cluster: bool) -> Result<u16> {
    let Some((low, end)) = walk_range(cluster) else {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .io(|| "failed to probe a free port".into())?;
        return Ok(listener
            .local_addr()
            .io(|| "failed to probe a free port".into())?
            .port());
    };
    let span = end - low;
    let port = low + (taken.next.wrapping_sub(low)) % span;
    taken.next = port.wrapping_add(1);
    Ok(port)
}

/// Whether `port` can be listened on now.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn pick(cluster: bool) -> Result<u16> {
    let mut guard = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    let taken = guard.get_or_insert_with(|| Taken {
        ports: HashSet::new(),
        // A random start: std's hasher keys are drawn from the OS.
        next: u16::try_from(
            std::collections::hash_map::RandomState::new().hash_one(std::process::id())
                % u64::from(u16::MAX),
        )
        .unwrap_or(LOWEST),
    });
    for _ in 0..PROBES {
        let port = candidate(taken, cluster)?;
        if taken.ports.contains(&port) || !bindable(port) {
            continue;
        }
        if cluster {
            let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
                continue;
            };
            if taken.ports.contains(&bus) || !bindable(bus) {
                continue;
            }
            taken.ports.insert(bus);
        }
        taken.ports.insert(port);
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
        assert!(taken.ports.contains(&port) && taken.ports.contains(&bus));
    }

    #[test]
    fn the_walk_stays_below_the_ephemeral_range_where_there_is_room() {
        assert_eq!(walk_below(32768, false), Some((10000, 32768)));
        assert_eq!(walk_below(32768, true), Some((10000, 22768)));
        // Too little room below: the kernel's pick instead.
        assert_eq!(walk_below(20000, true), None);
        assert_eq!(walk_below(1024, false), None);
    }

    #[test]
    fn ports_come_from_the_walk_or_else_from_the_kernel() {
        let start = ephemeral_start();
        for cluster in [false, true] {
            for _ in 0..50 {
                let port = pick(cluster).expect("a free port");
                match walk_range(cluster) {
                    Some((low, end)) => assert!((low..end).contains(&port), "{port}"),
                    None => assert!(port >= start, "{port}"),
                }
            }
        }
    }
}
