//! Every redb table of a node, with its key and value layout. `docs/formats.md` describes
//! the same tables for readers who do not read Rust.
//!
//! Names carry a version suffix: a layout change gets a new name and a migration.

use redb::{MultimapTableDefinition, TableDefinition};

/// Node metadata. Key: name. Value: bytes.
/// - `node_key`: 32-byte Ed25519 secret key (the node identity; never logged).
/// - `token_key`: 32-byte HMAC key of login tokens (never logged).
/// - `hlc`: 12 bytes, the last hybrid-logical-clock timestamp issued (`Hlc::to_key`).
/// - `layout`: u64 LE, the storage layout version.
/// - `demo`: present once demo data was created.
pub(crate) const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// The event log. Key: 16-byte cylinder code ++ 12-byte HLC ++ 32-byte event id, so one
/// cylinder's history is one contiguous range in time order. Value: byte 1 ++ 64-byte
/// Ed25519 signature ++ canonical event encoding, or byte 2 ++ 32-byte id of the seal
/// that stands for the signature ++ canonical event encoding; the stored and wire form
/// of such an event has 32 zero bytes and the seal's id in place of the signature
/// (`schema::seal::seal_ref`, `store::log_value`, `store::stored_of_log`). Byte 0 ++
/// canonical encoding was layouts 3 to 8's sealed form; layout 9's conversion gives each
/// such event its seal's id.
pub(crate) const EVENTS_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events-2");
/// Layout 2's log: the same keys; values are the stored form (signature or 64 zero bytes,
/// then the canonical encoding). Read once to convert it into `events-2`.
pub(crate) const EVENTS_V1_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events-1");

/// Event id → the first 28 bytes of its key in `events-2` (cylinder code ++ HLC; the key
/// ends with the id itself): look-up by id (`store::runs::Ids`), and the events scope's
/// items. Kept in runs (`store::runs`). Key: 4-byte big-endian run number ++ 32-byte event
/// id ++ those 28 bytes. Value: none. Runs of level 1 take up to `store::runs::RUN_IDS`
/// ids each; the filling run is `ids_run` in `meta-1`, a merge's progress `ids_merge`.
pub(crate) const EVENT_ID_RUNS_TABLE: TableDefinition<&[u8], ()> = TableDefinition::new("event-ids-3");
/// Layout 5's id table: event id → the first 28 bytes of its key, in one tree. Read once
/// to convert it into `event-ids-3` (and the form older layouts convert into first).
pub(crate) const EVENT_IDS_V2_TABLE: TableDefinition<&[u8; 32], &[u8; 28]> = TableDefinition::new("event-ids-2");
/// Layout 3's id table: event id → its whole key in the log (the id written twice). Read
/// once to convert it into `event-ids-2`.
pub(crate) const EVENT_IDS_V1_TABLE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("event-ids-1");

/// Layouts 6 to 8's sealed events: first 16 bytes of the event id → 32-byte key of the
/// node whose seal lists it (`schema::seal`); an event found here travelled without its
/// own signature. Since layout 9 each sealed event's log value names its seal instead, and
/// opening such a file drops this table. Kept in runs (`store::runs`). Key: 4-byte big-endian run number ++ those 16 bytes ++
/// that node key. Value: none. The filling run is `sealed_run` in `meta-1`, a merge's
/// progress `sealed_merge`.
pub(crate) const SEALED_RUNS_TABLE: TableDefinition<&[u8], ()> = TableDefinition::new("sealed-2");
/// Layout 5's sealed table: the same map in one tree. Read once to convert it into
/// `sealed-2`.
pub(crate) const SEALED_V1_TABLE: TableDefinition<&[u8; 16], &[u8; 32]> = TableDefinition::new("sealed-1");

/// Received events without a signature whose seal has not arrived yet (a relay may pass
/// on a node's events before its seals). Key: first 16 bytes of the event id. Value: the
/// stored form. Taken in, checked like any received event, when a seal listing them comes.
pub(crate) const AWAITING_SEAL_TABLE: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("awaiting-seal-1");

/// Other nodes' events stored with their signature (they came before their seal). Key:
/// first 16 bytes of the event id ++ 32-byte key of its node. Value: its key in
/// `events-2`. When a seal of that node listing the id is stored, the log value takes the
/// seal's id in place of the signature (so the event travels on without it) and the row
/// goes.
pub(crate) const SIGNED_UNSEALED_TABLE: TableDefinition<&[u8; 48], &[u8]> = TableDefinition::new("signed-unsealed-1");

/// This node's own events not yet sealed. Key: u64 counter. Value: 32-byte event id.
pub(crate) const UNSEALED_TABLE: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("unsealed-1");

/// Traceability indexes, in runs. Key: 4-byte big-endian run number ++
/// `<dimension>\0<value>\0` ++ 8-byte big-endian wall ms ++ 32-byte event id, for
/// dimensions `time` (empty value), `operator`, `kind` and `place`. Value: none; the id
/// leads to the event through `event-ids-3`. Run 0 takes this node's own events as they
/// are stored; each index pass writes received events into the newest run of level 1,
/// which holds a bounded number of events (see `store::RUN_EVENTS`), so a pass never
/// rewrites pages of the whole index. The idle writer merges two full runs of one level
/// into a new one of the next (`store::RUN_LEVEL_SHIFT`: the level is the run number's top
/// byte; the merge's progress is `index_merge:<scope>` in `meta-1`). A trace reads every
/// run and counts an entry found in two once.
pub(crate) const EVENT_INDEX_TABLE: TableDefinition<&[u8], ()> = TableDefinition::new("event-index-2");

/// Layout 4's traceability index: the same keys without the run number. Converted to
/// run 0 of `event-index-2` on open.
pub(crate) const EVENT_INDEX_V1_TABLE: TableDefinition<&[u8], ()> = TableDefinition::new("event-index-1");

/// Automerge documents: compacted snapshot. Key: document id (`cyl:<code>`, `staff:<account>`, ...).
pub(crate) const DOCS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("docs-1");

/// Automerge incremental change chunks since the snapshot. Key: (document id, sequence).
pub(crate) const DOC_CHUNKS_TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("doc-chunks-1");

/// Hydrated records as JSON, derived from `docs-1` in the same transaction. Key: document id.
pub(crate) const RECORDS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("records-1");

/// Derived cylinder rows: archive + derived state (postcard of `CylinderRow`), so a fill
/// check is one point read. Key: 16-byte code.
pub(crate) const CYLINDERS_TABLE: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("cylinders-1");

/// Secondary indexes of cylinders. Key: `status:<s>`, `place:<p>`, `medium:<m>`,
/// `serial:<n>`, `tag:<t>`, `owner:<e>`. Values: 16-byte codes. A tag with two codes is an
/// anomaly to report, which is why this is a multimap.
pub(crate) const CYLINDER_INDEX_TABLE: MultimapTableDefinition<&str, &[u8; 16]> =
    MultimapTableDefinition::new("cylinder-index-1");

/// Idempotency keys of handheld writes. Key: op id. Value: 32-byte SHA-256 of the request
/// ++ 32-byte id of the event recorded ++ postcard of the cylinder state right after it.
pub(crate) const OPS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("ops-1");

/// Counters: `cylinders`, `events`. Value: u64.
pub(crate) const COUNTERS_TABLE: TableDefinition<&str, u64> = TableDefinition::new("counters-1");

/// Replication items of document scopes (`D:<enterprise>`) and seal scopes
/// (`A:<enterprise>`). Key: (scope, 32-byte item id). Value: the document id, or the
/// seal's encoding (`schema::seal`). The event scope (`E:<enterprise>`) needs no table of
/// its own: its items are the ids in `event-ids-3`.
pub(crate) const SYNC_ITEMS_TABLE: TableDefinition<(&str, &[u8; 32]), &[u8]> = TableDefinition::new("sync-items-1");

/// A document's current item id: SHA-256 of the document id and its sorted heads.
pub(crate) const DOC_ITEMS_TABLE: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("doc-items-1");

/// Pre-aggregated summaries (count ++ sum of ids, 40 bytes) of each scope's items: the
/// whole scope, per first byte and per first two bytes of the id, so the fingerprint of
/// any of those ranges is one read.
pub(crate) const SUMMARY_L0_TABLE: TableDefinition<&str, &[u8; 40]> = TableDefinition::new("sync-summary-0-1");
pub(crate) const SUMMARY_L1_TABLE: TableDefinition<(&str, u8), &[u8; 40]> = TableDefinition::new("sync-summary-1-1");
/// The two-byte level, packed: key (scope, first id byte); value: the summaries of the
/// 256 two-byte prefixes under that byte, in order of the second byte
/// (`replica::L2_ROW_BYTES`). A commit of many received events touches nearly every
/// two-byte prefix; packed, it rewrites 256 rows, not one per prefix (about one per event).
pub(crate) const SUMMARY_L2_TABLE: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("sync-summary-2-2");
/// Layout 7's two-byte level: a row per prefix (scope, first two id bytes as u16 BE).
/// Read once to pack it into `sync-summary-2-2`.
pub(crate) const SUMMARY_L2_V1_TABLE: TableDefinition<(&str, u16), &[u8; 40]> =
    TableDefinition::new("sync-summary-2-1");

/// Anomalies found in the data (`schema::anomaly`). Key: 16-byte cylinder code ++ 32-byte
/// anomaly id. Value: postcard of `Anomaly`. Rewritten per cylinder when its data changes.
pub(crate) const ANOMALIES_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("anomalies-1");

/// Change sequence of each replication scope, packed (`store::changes`): key (scope,
/// sequence number of the row's first entry); value: the width of its entries (one byte),
/// then the entries of up to `changes::ROW_ENTRIES` consecutive sequence numbers. One
/// entry per item added (events and document items alike; ids of replaced document items
/// stay listed). Sessions push "what I added since we last agreed" from it
/// (`sync::session`). An entry is the item id (32 bytes); for the events scope the
/// event's key in `events-2` (60 bytes, ending with its id), so that a push or an index
/// pass reads the log in key order without a look-up per event in the id table.
pub(crate) const CHANGES_TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("item-seq-3");
/// Layout 6's change sequence: one row per entry, the same entries. Read once to convert
/// it into `item-seq-3` (and the form layout 1's converts into first).
pub(crate) const ITEM_SEQ_V2_TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("item-seq-2");
/// Layout 1's change sequence (ids for every scope), read once to convert it into `item-seq-2`.
pub(crate) const ITEM_SEQ_V1_TABLE: TableDefinition<(&str, u64), &[u8; 32]> = TableDefinition::new("item-seq-1");
