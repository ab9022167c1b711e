//! A Kademlia `RecordStore` on sled, so DHT records and provider records survive restarts.
//!
//! Expiry instants are monotonic in libp2p; on disk they become unix milliseconds and are turned
//! back into instants on read. Expired entries are dropped as they are met and by
//! [`SledStore::sweep_expired`], which the network task runs every minute.
//!
//! Bounds (what peers can make this node keep):
//! - ordinary records: libp2p's memory-store limits, [`MAX_RECORDS`] records of at most
//!   [`MAX_VALUE_BYTES`];
//! - binding records (keys under `/hermes/binding/` and `/hermes/peer/`): a separate budget of
//!   [`MAX_BINDING_RECORDS`], each no larger than an encoded binding, so that the bindings of
//!   several large subnets fit without granting room to arbitrary values; a binding is never
//!   replaced by one issued earlier ([`SledStore::put`]);
//! - provider records: at most [`MAX_PROVIDERS_PER_KEY`] live providers per key and
//!   [`MAX_PROVIDER_RECORDS`] in all (Hermes itself never provides keys).
//!
//! What a peer may ask this node to store is checked first by [`check_inbound`].
//!
//! Layout: tree `kad_records` maps `key` → record; tree `kad_providers` maps
//! `key_len(u16) || key || provider peer id bytes` → provider record.

use super::{BINDING_KEY_PREFIX, PEER_KEY_PREFIX};
use hermes_proto::{Hotkey, SignedBinding};
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most ordinary records kept (libp2p's `MemoryStoreConfig::max_records`).
pub const MAX_RECORDS: usize = 1024;
/// Largest ordinary record value accepted (libp2p's `max_value_bytes`).
pub const MAX_VALUE_BYTES: usize = 65 * 1024;
/// Most binding records kept: two per node (by hotkey and by peer id), for 4096 nodes. Each is at
/// most [`hermes_proto::binding::MAX_ENCODED_LEN`] bytes, so the whole budget is a few MiB.
pub const MAX_BINDING_RECORDS: usize = 8192;
/// Most providers kept per key (libp2p's `max_providers_per_key`, the replication factor).
pub const MAX_PROVIDERS_PER_KEY: usize = 20;
/// Most provider records kept in all.
pub const MAX_PROVIDER_RECORDS: usize = 1024;
/// Keys under this prefix are Hermes's own; peers may store only the binding kinds.
pub const RESERVED_PREFIX: &[u8] = b"/hermes/";

/// Whether `key` holds a binding record.
fn is_binding_key(key: &[u8]) -> bool {
    key.starts_with(BINDING_KEY_PREFIX) || key.starts_with(PEER_KEY_PREFIX)
}

/// Decides whether a record a verified peer asks this node to store may be stored, at `now`
/// (unix seconds): a binding must verify for the hotkey (or peer id) its key names; other keys
/// under [`RESERVED_PREFIX`] are refused; any other key is an application record, bounded by
/// the store.
///
/// # Errors
/// Why the record is refused, in words.
pub fn check_inbound(key: &[u8], value: &[u8], now: u64) -> std::result::Result<(), String> {
    if let Some(hk) = key.strip_prefix(BINDING_KEY_PREFIX) {
        let hotkey = <[u8; 32]>::try_from(hk)
            .map(Hotkey)
            .map_err(|_| "a binding key names no hotkey".to_string())?;
        let b = SignedBinding::decode(value).map_err(|e| e.to_string())?;
        let peer = b.record.peer_id.clone();
        return b
            .verify(&peer, Some(&hotkey), now)
            .map_err(|e| e.to_string());
    }
    if let Some(peer) = key.strip_prefix(PEER_KEY_PREFIX) {
        PeerId::from_bytes(peer).map_err(|_| "a peer key names no peer id".to_string())?;
        let b = SignedBinding::decode(value).map_err(|e| e.to_string())?;
        return b.verify(peer, None, now).map_err(|e| e.to_string());
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err("the key is reserved for Hermes".into());
    }
    Ok(())
}

/// The `issued_at` of the binding stored in an encoded record, if it holds one.
fn issued_at(key: &[u8], encoded_record: &[u8]) -> Option<u64> {
    let r = decode_record(key, encoded_record)?;
    SignedBinding::decode(&r.value)
        .ok()
        .map(|b| b.record.issued_at)
}

/// The sled-backed store.
#[derive(Debug)]
pub struct SledStore {
    local: PeerId,
    records: sled::Tree,
    providers: sled::Tree,
    /// Number of ordinary records, kept here because `sled::Tree::len` walks the whole tree.
    count: std::cell::Cell<usize>,
    /// Number of binding records.
    bindings: std::cell::Cell<usize>,
    /// Number of provider records.
    provider_count: std::cell::Cell<usize>,
}

impl SledStore {
    /// A store over the two trees (counted once, keys only).
    pub fn new(local: PeerId, records: sled::Tree, providers: sled::Tree) -> Self {
        let (mut count, mut bindings) = (0, 0);
        for k in records.iter().keys().filter_map(|k| k.ok()) {
            if is_binding_key(&k) {
                bindings += 1;
            } else {
                count += 1;
            }
        }
        let provider_count = providers.len();
        SledStore {
            local,
            records,
            providers,
            count: std::cell::Cell::new(count),
            bindings: std::cell::Cell::new(bindings),
            provider_count: std::cell::Cell::new(provider_count),
        }
    }

    fn counter(&self, key: &[u8]) -> &std::cell::Cell<usize> {
        if is_binding_key(key) {
            &self.bindings
        } else {
            &self.count
        }
    }

    fn removed_record(&self, key: &[u8]) {
        let c = self.counter(key);
        c.set(c.get().saturating_sub(1));
    }

    /// Drops every expired (or unreadable) record and provider record. Both trees are bounded,
    /// so a full walk is short.
    pub fn sweep_expired(&mut self) {
        let dead: Vec<sled::IVec> = self
            .records
            .iter()
            .filter_map(|kv| kv.ok())
            .filter(|(k, v)| decode_record(k, v).is_none())
            .map(|(k, _)| k)
            .collect();
        for k in dead {
            if let Ok(Some(_)) = self.records.remove(&k) {
                self.removed_record(&k);
            }
        }
        let dead: Vec<sled::IVec> = self
            .providers
            .iter()
            .filter_map(|kv| kv.ok())
            .filter(|(k, v)| decode_provider_entry(k, v).is_none())
            .map(|(k, _)| k)
            .collect();
        for k in dead {
            if let Ok(Some(_)) = self.providers.remove(&k) {
                self.provider_count
                    .set(self.provider_count.get().saturating_sub(1));
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn instant_to_unix(i: Option<Instant>) -> u64 {
    match i {
        None => 0,
        Some(i) => {
            let left = i.saturating_duration_since(Instant::now());
            unix_ms()
                .saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
                .max(1)
        }
    }
}

/// `None` = never expires; `Some(None)` = already expired.
fn unix_to_instant(ms: u64) -> Option<Option<Instant>> {
    if ms == 0 {
        return Some(None);
    }
    let now = unix_ms();
    if ms <= now {
        return None;
    }
    Some(Some(Instant::now() + Duration::from_millis(ms - now)))
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_record(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.value.len() + 64);
    out.extend_from_slice(&instant_to_unix(r.expires).to_le_bytes());
    put_bytes(
        &mut out,
        &r.publisher.map(|p| p.to_bytes()).unwrap_or_default(),
    );
    put_bytes(&mut out, &r.value);
    out
}

fn decode_record(key: &[u8], v: &[u8]) -> Option<Record> {
    let mut c = Cursor(v);
    let expires = unix_to_instant(c.u64()?)?;
    let publisher = match c.bytes()? {
        [] => None,
        b => Some(PeerId::from_bytes(b).ok()?),
    };
    let value = c.bytes()?.to_vec();
    Some(Record {
        key: RecordKey::new(&key),
        value,
        publisher,
        expires,
    })
}

fn provider_key(key: &RecordKey, provider: &PeerId) -> Vec<u8> {
    let k = key.as_ref();
    let mut out = Vec::with_capacity(k.len() + 40);
    out.extend_from_slice(&u16::try_from(k.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(&provider.to_bytes());
    out
}

fn provider_prefix(key: &RecordKey) -> Vec<u8> {
    let k = key.as_ref();
    let mut out = Vec::with_capacity(k.len() + 2);
    out.extend_from_slice(&u16::try_from(k.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(k);
    out
}

fn encode_provider(p: &ProviderRecord) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&instant_to_unix(p.expires).to_le_bytes());
    put_bytes(&mut out, &p.provider.to_bytes());
    out.extend_from_slice(&u32::try_from(p.addresses.len()).unwrap_or(0).to_le_bytes());
    for a in &p.addresses {
        put_bytes(&mut out, &a.to_vec());
    }
    out
}

fn decode_provider(key: &RecordKey, v: &[u8]) -> Option<ProviderRecord> {
    let mut c = Cursor(v);
    let expires = unix_to_instant(c.u64()?)?;
    let provider = PeerId::from_bytes(c.bytes()?).ok()?;
    let n = c.u32()?.min(64);
    let mut addresses = Vec::new();
    for _ in 0..n {
        addresses.push(Multiaddr::try_from(c.bytes()?.to_vec()).ok()?);
    }
    Some(ProviderRecord {
        key: key.clone(),
        provider,
        expires,
        addresses,
    })
}

/// Decodes a provider entry with the record key taken from its tree key.
fn decode_provider_entry(k: &[u8], v: &[u8]) -> Option<ProviderRecord> {
    let klen = usize::from(u16::from_be_bytes([*k.first()?, *k.get(1)?]));
    let key = RecordKey::new(&k.get(2..2 + klen)?);
    decode_provider(&key, v)
}

/// Records read from sled one at a time (expired ones skipped).
pub struct RecordsIter<'a> {
    inner: sled::Iter,
    _store: std::marker::PhantomData<&'a SledStore>,
}

impl std::fmt::Debug for RecordsIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordsIter")
    }
}

impl<'a> Iterator for RecordsIter<'a> {
    type Item = Cow<'a, Record>;
    fn next(&mut self) -> Option<Self::Item> {
        for kv in self.inner.by_ref() {
            let Ok((k, v)) = kv else { continue };
            if let Some(r) = decode_record(&k, &v) {
                return Some(Cow::Owned(r));
            }
        }
        None
    }
}

/// This node's own provider records, read from sled one at a time.
pub struct ProvidedIter<'a> {
    inner: sled::Iter,
    local: PeerId,
    _store: std::marker::PhantomData<&'a SledStore>,
}

impl std::fmt::Debug for ProvidedIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProvidedIter")
    }
}

impl<'a> Iterator for ProvidedIter<'a> {
    type Item = Cow<'a, ProviderRecord>;
    fn next(&mut self) -> Option<Self::Item> {
        for kv in self.inner.by_ref() {
            let Ok((k, v)) = kv else { continue };
            if let Some(p) = decode_provider_entry(&k, &v) {
                if p.provider == self.local {
                    return Some(Cow::Owned(p));
                }
            }
        }
        None
    }
}

impl RecordStore for SledStore {
    type RecordsIter<'a> = RecordsIter<'a>;
    type ProvidedIter<'a> = ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        let v = self.records.get(k.as_ref()).ok()??;
        match decode_record(k.as_ref(), &v) {
            Some(r) => Some(Cow::Owned(r)),
            None => {
                // Expired or unreadable: drop it so it is not served again.
                if let Ok(Some(_)) = self.records.remove(k.as_ref()) {
                    self.removed_record(k.as_ref());
                }
                None
            }
        }
    }

    /// Stores a record within its budget. A binding record whose binding was issued before the
    /// one stored under the same key is ignored (`Ok`, the newer one stays): a replayed old
    /// binding must not bring back a retired prekey or address.
    fn put(&mut self, r: Record) -> Result<()> {
        let key = r.key.as_ref();
        let binding = is_binding_key(key);
        let max_len = if binding {
            hermes_proto::binding::MAX_ENCODED_LEN
        } else {
            MAX_VALUE_BYTES
        };
        if r.value.len() > max_len {
            return Err(Error::ValueTooLarge);
        }
        let existing = self.records.get(key).ok().flatten();
        if binding {
            if let (Some(old), Ok(new)) = (&existing, SignedBinding::decode(&r.value)) {
                if issued_at(key, old).is_some_and(|t| t > new.record.issued_at) {
                    return Ok(());
                }
            }
        }
        let (counter, max) = if binding {
            (&self.bindings, MAX_BINDING_RECORDS)
        } else {
            (&self.count, MAX_RECORDS)
        };
        if existing.is_none() && counter.get() >= max {
            return Err(Error::MaxRecords);
        }
        let previous = self.records.insert(key, encode_record(&r)).map_err(|e| {
            tracing::error!(error = %e, "kad record write failed");
            Error::MaxRecords
        })?;
        if previous.is_none() {
            counter.set(counter.get() + 1);
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        if let Ok(Some(_)) = self.records.remove(k.as_ref()) {
            self.removed_record(k.as_ref());
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        RecordsIter {
            inner: self.records.iter(),
            _store: std::marker::PhantomData,
        }
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let key = provider_key(&record.key, &record.provider);
        let exists = self.providers.contains_key(&key).unwrap_or(false);
        if !exists {
            if self.provider_count.get() >= MAX_PROVIDER_RECORDS {
                return Err(Error::MaxProvidedKeys);
            }
            // Only live providers count toward the per-key limit; expired ones go now.
            let prefix = provider_prefix(&record.key);
            let mut live = 0;
            for (k, v) in self.providers.scan_prefix(&prefix).filter_map(|kv| kv.ok()) {
                if decode_provider(&record.key, &v).is_some() {
                    live += 1;
                } else if let Ok(Some(_)) = self.providers.remove(&k) {
                    self.provider_count
                        .set(self.provider_count.get().saturating_sub(1));
                }
            }
            if live >= MAX_PROVIDERS_PER_KEY {
                return Err(Error::MaxProvidedKeys);
            }
        }
        let previous = self
            .providers
            .insert(key, encode_provider(&record))
            .map_err(|_| Error::MaxProvidedKeys)?;
        if previous.is_none() {
            self.provider_count.set(self.provider_count.get() + 1);
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers
            .scan_prefix(provider_prefix(key))
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| decode_provider(key, &v))
            .take(MAX_PROVIDERS_PER_KEY)
            .collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        ProvidedIter {
            inner: self.providers.iter(),
            local: self.local,
            _store: std::marker::PhantomData,
        }
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        if let Ok(Some(_)) = self.providers.remove(provider_key(k, p)) {
            self.provider_count
                .set(self.provider_count.get().saturating_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path, local: PeerId) -> (sled::Db, SledStore) {
        let db = sled::open(dir).unwrap();
        let s = SledStore::new(
            local,
            db.open_tree("r").unwrap(),
            db.open_tree("p").unwrap(),
        );
        (db, s)
    }

    #[test]
    fn records_and_providers_survive_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let me = PeerId::random();
        let other = PeerId::random();
        {
            let (_db, mut s) = store(dir.path(), me);
            let mut r = Record::new(RecordKey::new(&b"k1"), b"v1".to_vec());
            r.publisher = Some(other);
            r.expires = Some(Instant::now() + Duration::from_secs(3600));
            s.put(r).unwrap();
            let mut gone = Record::new(RecordKey::new(&b"k2"), b"v2".to_vec());
            gone.expires = Some(Instant::now());
            s.put(gone).unwrap();
            s.add_provider(ProviderRecord::new(
                RecordKey::new(&b"k1"),
                me,
                vec!["/ip4/1.2.3.4/tcp/1".parse().unwrap()],
            ))
            .unwrap();
            s.add_provider(ProviderRecord::new(RecordKey::new(&b"k1"), other, vec![]))
                .unwrap();
            assert!(matches!(
                s.put(Record::new(
                    RecordKey::new(&b"big"),
                    vec![0; MAX_VALUE_BYTES + 1]
                )),
                Err(Error::ValueTooLarge)
            ));
        }
        let (_db, mut s) = store(dir.path(), me);
        let r = s.get(&RecordKey::new(&b"k1")).unwrap();
        assert_eq!(r.value, b"v1");
        assert_eq!(r.publisher, Some(other));
        assert!(r.expires.is_some());
        assert!(
            s.get(&RecordKey::new(&b"k2")).is_none(),
            "expired record is not served"
        );
        assert_eq!(s.records().count(), 1);
        assert_eq!(s.count.get(), 1, "the expired record was dropped on read");
        assert_eq!(s.providers(&RecordKey::new(&b"k1")).len(), 2);
        let provided: Vec<_> = s.provided().collect();
        assert_eq!(provided.len(), 1);
        assert_eq!(provided[0].addresses.len(), 1);
        s.remove_provider(&RecordKey::new(&b"k1"), &other);
        assert_eq!(s.providers(&RecordKey::new(&b"k1")).len(), 1);
        s.remove(&RecordKey::new(&b"k1"));
        assert!(s.get(&RecordKey::new(&b"k1")).is_none());
    }

    fn binding_bytes(issued_at: u64, prekey: u8) -> Vec<u8> {
        hermes_proto::SignedBinding {
            record: hermes_proto::BindingRecord {
                hotkey: Hotkey([7; 32]),
                ss58_prefix: 42,
                peer_id: PeerId::random().to_bytes(),
                netuids: vec![3],
                prekey: [prekey; 32],
                issued_at,
                expires_at: issued_at + 3600,
            },
            signature: [0; 64],
        }
        .encode()
    }

    fn binding_key() -> RecordKey {
        let mut k = BINDING_KEY_PREFIX.to_vec();
        k.extend_from_slice(&[7; 32]);
        RecordKey::new(&k)
    }

    #[test]
    fn ordinary_records_have_libp2ps_limit_and_bindings_their_own_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut s) = store(dir.path(), PeerId::random());
        for i in 0..MAX_RECORDS {
            s.put(Record::new(RecordKey::new(&format!("/app/{i}")), vec![1]))
                .unwrap();
        }
        assert!(matches!(
            s.put(Record::new(RecordKey::new(&b"/app/one-more"), vec![1])),
            Err(Error::MaxRecords)
        ));
        // Replacing an existing key is still allowed, and bindings do not compete for room.
        s.put(Record::new(RecordKey::new(&b"/app/0"), vec![2]))
            .unwrap();
        s.put(Record::new(binding_key(), binding_bytes(1_000, 1)))
            .unwrap();
        // A binding key cannot carry an arbitrary large value.
        let mut big = PEER_KEY_PREFIX.to_vec();
        big.extend_from_slice(&PeerId::random().to_bytes());
        assert!(matches!(
            s.put(Record::new(RecordKey::new(&big), vec![0; 4096])),
            Err(Error::ValueTooLarge)
        ));
        assert_eq!(s.records().count(), MAX_RECORDS + 1);
    }

    #[test]
    fn an_older_binding_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut s) = store(dir.path(), PeerId::random());
        let newer = binding_bytes(2_000, 2);
        s.put(Record::new(binding_key(), newer.clone())).unwrap();
        s.put(Record::new(binding_key(), binding_bytes(1_000, 1)))
            .unwrap();
        assert_eq!(s.get(&binding_key()).unwrap().value, newer);
        let newest = binding_bytes(3_000, 3);
        s.put(Record::new(binding_key(), newest.clone())).unwrap();
        assert_eq!(s.get(&binding_key()).unwrap().value, newest);
        assert_eq!(s.bindings.get(), 1);
    }

    #[test]
    fn expired_records_and_providers_are_swept_and_providers_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut s) = store(dir.path(), PeerId::random());
        // Expired on arrival (as a record whose TTL ran out while nobody read it).
        let mut r = Record::new(RecordKey::new(&b"/app/short"), vec![1]);
        r.expires = Some(Instant::now());
        s.put(r).unwrap();
        for i in 0..10 {
            let mut p =
                ProviderRecord::new(RecordKey::new(&format!("p{i}")), PeerId::random(), vec![]);
            p.expires = Some(Instant::now());
            s.add_provider(p).unwrap();
        }
        assert_eq!((s.records.len(), s.providers.len()), (1, 10));
        s.sweep_expired();
        assert_eq!(s.count.get(), 0);
        assert_eq!(s.records.len(), 0, "the expired record is gone from disk");
        assert_eq!(s.providers.len(), 0, "expired providers are gone from disk");
        assert_eq!(s.provider_count.get(), 0);

        // Per key: at most MAX_PROVIDERS_PER_KEY live providers.
        let key = RecordKey::new(&b"k");
        for _ in 0..MAX_PROVIDERS_PER_KEY {
            s.add_provider(ProviderRecord::new(key.clone(), PeerId::random(), vec![]))
                .unwrap();
        }
        assert!(matches!(
            s.add_provider(ProviderRecord::new(key.clone(), PeerId::random(), vec![])),
            Err(Error::MaxProvidedKeys)
        ));
        // In all: at most MAX_PROVIDER_RECORDS.
        let mut added = MAX_PROVIDERS_PER_KEY;
        for i in 0..MAX_PROVIDER_RECORDS {
            let k = RecordKey::new(&format!("k{}", i % 100));
            if s.add_provider(ProviderRecord::new(k, PeerId::random(), vec![]))
                .is_ok()
            {
                added += 1;
            }
        }
        assert_eq!(added, MAX_PROVIDER_RECORDS);
        assert_eq!(s.providers.len(), MAX_PROVIDER_RECORDS);
    }

    #[test]
    fn peers_may_store_only_verified_bindings_under_hermes_keys() {
        assert!(check_inbound(b"/app/x", b"anything", 0).is_ok());
        assert!(check_inbound(b"/hermes/other", b"x", 0).is_err());
        // Unsigned (zero signature) bindings are refused under both binding prefixes.
        let b = binding_bytes(1_000, 1);
        assert!(check_inbound(binding_key().as_ref(), &b, 1_500).is_err());
        let mut pk = PEER_KEY_PREFIX.to_vec();
        pk.extend_from_slice(&PeerId::random().to_bytes());
        assert!(check_inbound(&pk, &b, 1_500).is_err());
        assert!(check_inbound(b"/hermes/peer/not-a-peer-id", &b, 1_500).is_err());
    }
}
