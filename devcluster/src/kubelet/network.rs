//! Pod IPs: each pod gets a loopback address of its own, `127.0.X.Y` with X in 1..=255 and Y in
//! 1..=254 (never anything in `127.0.0.0/24`, which holds `127.0.0.1`), so that several pods can
//! bind the same port.
//!
//! One pool serves every kubelet of the process ([`IpPool::shared`]), so that two kubelets in one
//! test binary never hand out the same address. Its search starts at an offset drawn at random
//! once per process, so that local control planes running side by side (parallel test binaries)
//! are very unlikely to meet; from there the first free address is handed out, and a released
//! one is reused.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// The addresses handed out to pods that still run.
#[derive(Clone, Debug, Default)]
pub(crate) struct IpPool {
    taken: Arc<Mutex<BTreeSet<u16>>>,
    base: u16,
}

static SHARED: LazyLock<IpPool> = LazyLock::new(|| IpPool {
    taken: Arc::default(),
    base: fastrand::u16(..SIZE),
});

/// All addresses of the pool are in use.
#[derive(Debug, thiserror::Error)]
#[error("every pod IP in 127.0.1.1-127.0.255.254 is in use")]
pub(crate) struct PoolExhausted;

fn address(index: u16) -> Ipv4Addr {
    // 254 hosts per third octet, third octet from 1.
    let x = (index / 254 + 1) as u8;
    let y = (index % 254 + 1) as u8;
    Ipv4Addr::new(127, 0, x, y)
}

fn index(ip: Ipv4Addr) -> Option<u16> {
    let [a, b, x, y] = ip.octets();
    if a != 127 || b != 0 || x == 0 || y == 0 || y == 255 {
        return None;
    }
    Some((x as u16 - 1) * 254 + (y as u16 - 1))
}

const SIZE: u16 = 255 * 254;

impl IpPool {
    /// The pool of this process.
    pub(crate) fn shared() -> Self {
        SHARED.clone()
    }

    /// The first free address from the pool's offset on.
    pub(crate) fn allocate(&self) -> Result<Ipv4Addr, PoolExhausted> {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let free = (0..SIZE)
            .map(|i| (self.base + i) % SIZE)
            .find(|i| !taken.contains(i))
            .ok_or(PoolExhausted)?;
        taken.insert(free);
        Ok(address(free))
    }

    /// Gives `ip` back to the pool.
    pub(crate) fn release(&self, ip: Ipv4Addr) {
        if let Some(i) = index(ip) {
            let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            taken.remove(&i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_never_localhost_and_reused_once_released() {
        let pool = IpPool::default();
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(b, Ipv4Addr::new(127, 0, 1, 2));
        pool.release(a);
        assert_eq!(pool.allocate().unwrap(), a);
        for i in 0..300u16 {
            let ip = address(i);
            assert_ne!(ip, Ipv4Addr::LOCALHOST);
            assert_eq!(index(ip), Some(i));
        }
        assert_eq!(address(254), Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(address(SIZE - 1), Ipv4Addr::new(127, 0, 255, 254));
    }
}
