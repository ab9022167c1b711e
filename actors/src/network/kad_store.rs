//! A Kademlia `RecordStore` on sled, so DHT records and provider records survive restarts.
//!
//! Expiry instants are monotonic in libp2p; on disk they become unix milliseconds and are turned
//! back into instants on read, and expired entries are dropped as they are met. Record values
//! and counts are bounded like libp2p's memory store.
//!
//! Layout: tree `kad_records` maps `key` → record; tree `kad_providers` maps
//! `key_len(u16) || key || provider peer id bytes` → provider record.

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most records kept.
pub const MAX_RECORDS: usize = 65_536;
/// Largest record value accepted.
pub const MAX_VALUE_BYTES: usize = 65 * 1024;
/// Most providers kept per key.
pub const MAX_PROVIDERS_PER_KEY: usize = 20;

/// The sled-backed store.
#[derive(Debug)]
pub struct SledStore {
    local: PeerId,
    records: sled::Tree,
    providers: sled::Tree,
    /// Number of records, kept here because `sled::Tree::len` walks the whole tree.
    count: std::cell::Cell<usize>,
}

impl SledStore {
    /// A store over the two trees.
    pub fn new(local: PeerId, records: sled::Tree, providers: sled::Tree) -> Self {
        let count = std::cell::Cell::new(records.len());
        SledStore {
            local,
            records,
            providers,
            count,
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

impl RecordStore for SledStore {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::vec::IntoIter<Cow<'a, ProviderRecord>>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        let v = self.records.get(k.as_ref()).ok()??;
        match decode_record(k.as_ref(), &v) {
            Some(r) => Some(Cow::Owned(r)),
            None => {
                // Expired or unreadable: drop it so it is not served again.
                if let Ok(Some(_)) = self.records.remove(k.as_ref()) {
                    self.count.set(self.count.get().saturating_sub(1));
                }
                None
            }
        }
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > MAX_VALUE_BYTES {
            return Err(Error::ValueTooLarge);
        }
        let exists = self.records.contains_key(r.key.as_ref()).unwrap_or(false);
        if !exists && self.count.get() >= MAX_RECORDS {
            return Err(Error::MaxRecords);
        }
        let previous = self
            .records
            .insert(r.key.as_ref(), encode_record(&r))
            .map_err(|e| {
                tracing::error!(error = %e, "kad record write failed");
                Error::MaxRecords
            })?;
        if previous.is_none() {
            self.count.set(self.count.get() + 1);
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        if let Ok(Some(_)) = self.records.remove(k.as_ref()) {
            self.count.set(self.count.get().saturating_sub(1));
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.records
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| decode_record(&k, &v))
            .map(Cow::Owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let prefix = provider_prefix(&record.key);
        let existing = self.providers.scan_prefix(&prefix).count();
        let key = provider_key(&record.key, &record.provider);
        if existing >= MAX_PROVIDERS_PER_KEY && !self.providers.contains_key(&key).unwrap_or(false)
        {
            return Err(Error::MaxProvidedKeys);
        }
        self.providers
            .insert(key, encode_provider(&record))
            .map_err(|_| Error::MaxProvidedKeys)?;
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers
            .scan_prefix(provider_prefix(key))
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| decode_provider(key, &v))
            .collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.providers
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| {
                let klen = usize::from(u16::from_be_bytes([*k.first()?, *k.get(1)?]));
                let key = RecordKey::new(&k.get(2..2 + klen)?);
                decode_provider(&key, &v)
            })
            .filter(|p| p.provider == self.local)
            .map(Cow::Owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        let _ = self.providers.remove(provider_key(k, p));
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
}
