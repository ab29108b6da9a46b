//! Choosing an endpoint: weighted round robin, least request with the power
//! of two choices, and consistent hashing on a Maglev table. Each works on an
//! immutable snapshot of the endpoints, rebuilt when they change.

use super::endpoint::Endpoint;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Maglev table size: a prime well above any endpoint count, so each
/// endpoint owns many slots and a change moves about 1/N of the keys.
const MAGLEV_SIZE: usize = 65_537;

pub struct Snapshot {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Endpoint indices in smooth weighted round-robin order, one turn each
    /// per unit of weight.
    wheel: Vec<u32>,
    /// Slot -> endpoint index; built only for consistent-hash upstreams.
    maglev: Option<Vec<u32>>,
}

impl Snapshot {
    /// How many of these endpoints take calls now.
    pub fn in_rotation(&self) -> usize {
        let now = super::endpoint::now_millis();
        self.endpoints
            .iter()
            .filter(|e| e.is_available(now))
            .count()
    }

    pub fn new(endpoints: Vec<Arc<Endpoint>>, hashing: bool) -> Snapshot {
        let wheel = smooth_wheel(&endpoints);
        let maglev = (hashing && !endpoints.is_empty()).then(|| maglev_table(&endpoints));
        Snapshot {
            endpoints,
            wheel,
            maglev,
        }
    }

    /// The next endpoint in weighted turn that `usable` accepts. The turn
    /// moves past the slots it skipped, so an endpoint out of rotation
    /// shares its turns among the others by weight instead of handing them
    /// all to the one after it.
    pub fn round_robin(
        &self,
        counter: &AtomicUsize,
        usable: impl Fn(&Endpoint) -> bool,
    ) -> Option<&Arc<Endpoint>> {
        let len = self.wheel.len();
        if len == 0 {
            return None;
        }
        let at = |slot: usize| &self.endpoints[self.wheel[slot % len] as usize];
        let start = counter.fetch_add(1, Ordering::Relaxed);
        let skipped = (0..len).position(|i| usable(at(start + i)))?;
        if skipped > 0 {
            counter.fetch_add(skipped, Ordering::Relaxed);
        }
        Some(at(start + skipped))
    }

    /// Two endpoints at random; the one with fewer calls per unit of weight.
    pub fn least_request(&self, usable: impl Fn(&Endpoint) -> bool) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let load =
            |e: &Endpoint| e.in_flight.load(Ordering::Relaxed) as f64 / f64::from(e.weight());
        let a = fastrand::usize(..n);
        let b = if n > 1 {
            (a + 1 + fastrand::usize(..n - 1)) % n
        } else {
            a
        };
        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
        match (usable(ea), usable(eb)) {
            (true, true) => Some(if load(eb) < load(ea) { eb } else { ea }),
            (true, false) => Some(ea),
            (false, true) => Some(eb),
            // Both unusable: the least loaded of those that are.
            (false, false) => self
                .endpoints
                .iter()
                .filter(|e| usable(e))
                .min_by(|x, y| load(x).total_cmp(&load(y))),
        }
    }

    /// The endpoint that owns `key`; if it is unusable, the next owner along
    /// the table, so keys of a sick endpoint spread instead of piling up.
    pub fn by_hash(&self, key: u64, usable: impl Fn(&Endpoint) -> bool) -> Option<&Arc<Endpoint>> {
        let table = self.maglev.as_ref()?;
        let start = (key % table.len() as u64) as usize;
        let mut seen = 0;
        for i in 0..table.len() {
            let e = &self.endpoints[table[(start + i) % table.len()] as usize];
            if usable(e) {
                return Some(e);
            }
            seen += 1;
            if seen > self.endpoints.len() * 64 {
                break;
            }
        }
        self.endpoints.iter().find(|e| usable(e))
    }
}

/// FNV-1a: stable across runs and builds, unlike the std hasher's keys.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finalise (from splitmix64) so nearby keys land far apart.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Smooth weighted round robin (as nginx does it), unrolled once: weights
/// 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
fn smooth_wheel(endpoints: &[Arc<Endpoint>]) -> Vec<u32> {
    let total: i64 = endpoints.iter().map(|e| i64::from(e.weight())).sum();
    let mut current = vec![0i64; endpoints.len()];
    let mut wheel = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, e) in endpoints.iter().enumerate() {
            current[i] += i64::from(e.weight());
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        wheel.push(best as u32);
    }
    wheel
}

/// Maglev's table (Eisenbud et al., NSDI 2016): each endpoint walks its own
/// permutation of the slots, taking turns, so the table is evenly shared
/// and depends only on the set of addresses, not their order.
fn maglev_table(endpoints: &[Arc<Endpoint>]) -> Vec<u32> {
    let m = MAGLEV_SIZE as u64;
    let perms: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| {
            let offset = hash(e.address.as_bytes()) % m;
            let skip = hash(format!("{}#skip", e.address).as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; endpoints.len()];
    let mut table = vec![u32::MAX; MAGLEV_SIZE];
    let mut filled = 0;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut slot = (offset + next[i] * skip) % m;
            while table[slot as usize] != u32::MAX {
                next[i] += 1;
                slot = (offset + next[i] * skip) % m;
            }
            table[slot as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == MAGLEV_SIZE {
                break 'fill;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(specs: &[(&str, u32)]) -> Vec<Arc<Endpoint>> {
        specs
            .iter()
            .map(|(a, w)| Arc::new(Endpoint::new((*a).to_owned(), *w, None)))
            .collect()
    }

    #[test]
    fn the_wheel_interleaves_by_weight() {
        let s = Snapshot::new(endpoints(&[("a:1", 5), ("b:1", 1), ("c:1", 1)]), false);
        let names: Vec<&str> = s
            .wheel
            .iter()
            .map(|&i| &s.endpoints[i as usize].address[..1])
            .collect();
        assert_eq!(names, ["a", "a", "b", "a", "c", "a", "a"]);
    }

    /// Turns taken over `picks` calls, by endpoint name.
    fn turns(
        s: &Snapshot,
        picks: usize,
        usable: impl Fn(&Endpoint) -> bool,
    ) -> Vec<(String, usize)> {
        let counter = AtomicUsize::new(0);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..picks {
            let e = s.round_robin(&counter, &usable).unwrap();
            *seen.entry(e.address[..1].to_owned()).or_insert(0) += 1;
        }
        seen.into_iter().collect()
    }

    #[test]
    fn an_endpoint_out_of_rotation_shares_its_turns_by_weight() {
        let even = Snapshot::new(endpoints(&[("a:1", 1), ("b:1", 1), ("c:1", 1)]), false);
        let no_c = |e: &Endpoint| !e.address.starts_with('c');
        assert_eq!(
            turns(&even, 600, no_c),
            [("a".to_owned(), 300), ("b".to_owned(), 300)]
        );
        // Strictly alternating, not a,a,b.
        let counter = AtomicUsize::new(0);
        let order: String = (0..6)
            .map(|_| even.round_robin(&counter, no_c).unwrap().address[..1].to_owned())
            .collect();
        assert_eq!(order, "ababab");

        let weighted = Snapshot::new(endpoints(&[("a:1", 5), ("b:1", 1), ("c:1", 1)]), false);
        assert_eq!(
            turns(&weighted, 600, no_c),
            [("a".to_owned(), 500), ("b".to_owned(), 100)]
        );
        let no_a = |e: &Endpoint| !e.address.starts_with('a');
        assert_eq!(
            turns(&weighted, 600, no_a),
            [("b".to_owned(), 300), ("c".to_owned(), 300)]
        );
        assert!(weighted
            .round_robin(&AtomicUsize::new(0), |_| false)
            .is_none());
    }

    #[test]
    fn maglev_moves_about_one_nth_of_keys_when_an_endpoint_joins() {
        let four = Snapshot::new(
            endpoints(&[
                ("10.0.0.1:80", 1),
                ("10.0.0.2:80", 1),
                ("10.0.0.3:80", 1),
                ("10.0.0.4:80", 1),
            ]),
            true,
        );
        let mut five_eps = four.endpoints.clone();
        five_eps.push(Arc::new(Endpoint::new("10.0.0.5:80".into(), 1, None)));
        let five = Snapshot::new(five_eps, true);
        let keys = 20_000;
        let (mut moved, mut to_newcomer) = (0, 0);
        let mut per = std::collections::HashMap::new();
        for k in 0..keys {
            let h = hash(format!("user-{k}").as_bytes());
            let a = &four.by_hash(h, |_| true).unwrap().address;
            let b = &five.by_hash(h, |_| true).unwrap().address;
            *per.entry(a.clone()).or_insert(0) += 1;
            if a != b {
                moved += 1;
                to_newcomer += i32::from(b == "10.0.0.5:80");
            }
        }
        let share = f64::from(moved) / f64::from(keys);
        assert!((0.15..0.25).contains(&share), "moved {share}");
        // Maglev trades a little extra movement among the others for balance.
        assert!(
            f64::from(to_newcomer) / f64::from(moved) > 0.9,
            "{to_newcomer} of {moved}"
        );
        for (addr, n) in per {
            assert!((4000..6000).contains(&n), "{addr} owns {n} of {keys}");
        }
    }

    #[test]
    fn an_unusable_owner_passes_its_keys_on() {
        let s = Snapshot::new(endpoints(&[("a:1", 1), ("b:1", 1), ("c:1", 1)]), true);
        for k in 0..100u64 {
            let h = hash(&k.to_le_bytes());
            let owner = s.by_hash(h, |_| true).unwrap().address.clone();
            let other = s.by_hash(h, |e| e.address != owner).unwrap();
            assert_ne!(other.address, owner);
        }
    }
}
