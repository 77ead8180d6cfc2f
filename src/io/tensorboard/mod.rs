//! TensorBoard event files: a writer for scalars, images, text and hyperparameters, and a
//! reader that checks every record, for tests and tools.
//!
//! An event file is a sequence of records. Each record is the length of its data as a
//! little-endian u64, the masked CRC-32C of those 8 bytes as a little-endian u32, the data,
//! and the masked CRC-32C of the data as a little-endian u32. The data of each record is
//! one serialized `Event` protocol buffer; the first one holds the file version.
//!
//! The messages are declared in Rust in [`proto`], without `protoc`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{Error, IoContext, Result};

mod proto;

pub use proto::*;

/// How the name of every event file starts (TensorBoard finds them by it).
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// The value of one hyperparameter in one session.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    /// A number (integers too).
    Number(f64),
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl HParamValue {
    fn to_proto(&self) -> ProtoValue {
        let kind = match self {
            HParamValue::Number(x) => ProtoValueKind::NumberValue(*x),
            HParamValue::Text(s) => ProtoValueKind::StringValue(s.clone()),
            HParamValue::Bool(b) => ProtoValueKind::BoolValue(*b),
        };
        ProtoValue { kind: Some(kind) }
    }
}

/// The type of one hyperparameter of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HParamKind {
    /// Numbers (integers too).
    Number,
    /// Strings.
    Text,
    /// Booleans.
    Bool,
}

impl HParamKind {
    /// The `DataType` value of `api.proto` for this kind.
    pub fn data_type(self) -> i32 {
        match self {
            HParamKind::Text => 1,
            HParamKind::Bool => 2,
            HParamKind::Number => 3,
        }
    }
}

/// A writer of one TensorBoard event file. Every call writes its records and hands them to
/// the operating system before it returns, so a run that is killed keeps what was written
/// and a reader sees it while the writer lives.
#[derive(Debug)]
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

/// Numbers the files that this process creates, so that two writers never share a name.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl EventWriter {
    /// Creates a new event file in `dir` (created if needed), named
    /// `events.out.tfevents.<unix seconds>.<hostname>.<pid>.<counter>`, and writes its
    /// file version event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        let name = format!(
            "{FILE_PREFIX}{}.{}.{}.{}",
            now().floor() as u64,
            hostname(),
            std::process::id(),
            FILE_COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        let mut writer = EventWriter { file, path };
        writer.write_events(&[Event {
            wall_time: now(),
            step: 0,
            what: Some(EventWhat::FileVersion(FILE_VERSION.into())),
        }])?;
        Ok(writer)
    }

    /// The path of the event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event at `step` with each `(tag, value)` as a scalar (stored as f32).
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|&(tag, x)| SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(SummaryValueKind::SimpleValue(x as f32)),
            })
            .collect();
        self.write_summary(step, value)
    }

    /// Writes one image at `step` under `tag`: the bytes of a PNG file of the given size,
    /// with `channels` (1 grey, 2 grey and alpha, 3 RGB, 4 RGBA) as its colorspace.
    pub fn image(
        &mut self,
        step: i64,
        tag: &str,
        png: &[u8],
        height: u32,
        width: u32,
        channels: u32,
    ) -> Result<()> {
        let image = SummaryImage {
            height: to_i32(height, "image height")?,
            width: to_i32(width, "image width")?,
            colorspace: to_i32(channels, "image channels")?,
            encoded_image_string: png.to_vec(),
        };
        self.write_summary(
            step,
            vec![SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(SummaryValueKind::Image(image)),
            }],
        )
    }

    /// Writes `markdown` at `step` under `tag` for the text plugin, as TensorBoard's own
    /// `text` summary does: a scalar string tensor with the plugin's (empty) data.
    pub fn text(&mut self, step: i64, tag: &str, markdown: &str) -> Result<()> {
        let tensor = TensorProto {
            dtype: DT_STRING,
            tensor_shape: Some(TensorShapeProto::default()),
            string_val: vec![markdown.as_bytes().to_vec()],
            ..Default::default()
        };
        // The content is the text plugin's `TextPluginData` at version 0, which
        // serializes to no bytes.
        self.write_summary(
            step,
            vec![SummaryValue {
                tag: tag.into(),
                metadata: Some(plugin_metadata(TEXT_PLUGIN, Vec::new())),
                value: Some(SummaryValueKind::Tensor(tensor)),
            }],
        )
    }

    /// Writes the experiment's description for the hparams plugin: each hyperparameter's
    /// name and type, and the scalar tags of the metrics to compare sessions by.
    pub fn hparams_experiment(
        &mut self,
        hparams: &[(&str, HParamKind)],
        metrics: &[&str],
    ) -> Result<()> {
        let experiment = HParamsExperiment {
            time_created_secs: now(),
            hparam_infos: hparams
                .iter()
                .map(|&(name, kind)| HParamInfo {
                    name: name.into(),
                    r#type: kind.data_type(),
                    ..Default::default()
                })
                .collect(),
            metric_infos: metrics
                .iter()
                .map(|&tag| MetricInfo {
                    name: Some(MetricName {
                        group: String::new(),
                        tag: tag.into(),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.write_hparams(HPARAMS_EXPERIMENT_TAG, HParamsData::Experiment(experiment))
    }

    /// Writes the start of this run's session for the hparams plugin, with its
    /// hyperparameter values.
    pub fn hparams_session_start(&mut self, values: &[(&str, HParamValue)]) -> Result<()> {
        let info = SessionStartInfo {
            hparams: values
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_proto()))
                .collect(),
            start_time_secs: now(),
            ..Default::default()
        };
        self.write_hparams(
            HPARAMS_SESSION_START_TAG,
            HParamsData::SessionStartInfo(info),
        )
    }

    /// Writes the end of this run's session for the hparams plugin: a success or a
    /// failure.
    pub fn hparams_session_end(&mut self, status_success: bool) -> Result<()> {
        let info = SessionEndInfo {
            status: if status_success {
                STATUS_SUCCESS
            } else {
                STATUS_FAILURE
            },
            end_time_secs: now(),
        };
        self.write_hparams(HPARAMS_SESSION_END_TAG, HParamsData::SessionEndInfo(info))
    }

    /// Writes one hparams summary as TensorBoard's hparams plugin builds it: at step 0, with
    /// the plugin data (version 0) in the metadata and an empty float vector as the tensor.
    fn write_hparams(&mut self, tag: &str, data: HParamsData) -> Result<()> {
        let content = HParamsPluginData {
            version: 0,
            data: Some(data),
        }
        .encode_to_vec();
        let null_tensor = TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![TensorShapeDim::default()],
                unknown_rank: false,
            }),
            ..Default::default()
        };
        self.write_summary(
            0,
            vec![SummaryValue {
                tag: tag.into(),
                metadata: Some(plugin_metadata(HPARAMS_PLUGIN, content)),
                value: Some(SummaryValueKind::Tensor(null_tensor)),
            }],
        )
    }

    fn write_summary(&mut self, step: i64, value: Vec<SummaryValue>) -> Result<()> {
        self.write_events(&[Event {
            wall_time: now(),
            step,
            what: Some(EventWhat::Summary(Summary { value })),
        }])
    }

    /// Writes the events' records in one write and flushes them.
    fn write_events(&mut self, events: &[Event]) -> Result<()> {
        let bytes: Vec<u8> = events.iter().flat_map(event_record).collect();
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .at(&self.path)
    }
}

/// A summary metadata that names `plugin` with its `content`.
fn plugin_metadata(plugin: &str, content: Vec<u8>) -> SummaryMetadata {
    SummaryMetadata {
        plugin_data: Some(PluginData {
            plugin_name: plugin.into(),
            content,
        }),
        ..Default::default()
    }
}

fn to_i32(x: u32, what: &str) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::Data(format!("{what} {x} is too large for TensorBoard")))
}

/// The current time in seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's host name, or "localhost" if it cannot be read.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many
    // bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).replace(['/', '\\'], "_");
    if rc != 0 || name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// The masked CRC-32C of `data`, as event files store their checksums.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    // ((crc >> 15) | (crc << 17)) + 0xa282ead8, modulo 2^32.
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record of an event file holding `data`: its length, the length's masked CRC, the
/// data and the data's masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The record of an event file that holds `event`.
pub fn event_record(event: &Event) -> Vec<u8> {
    record(&event.encode_to_vec())
}

/// The data of every record in the event file at `path`, after checking both checksums of
/// each. A wrong checksum or a file that ends inside a record is an error that names the
/// record's byte offset.
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    match scan_records(path)? {
        (records, None) => Ok(records),
        (_, Some(e)) => Err(e),
    }
}

/// The whole records at the start of the event file at `path`, up to the first damaged
/// or cut one (a killed writer can leave its last record cut), and the error about that
/// one, if any.
pub fn scan_records(path: &Path) -> Result<(Vec<Vec<u8>>, Option<Error>)> {
    let bytes = std::fs::read(path).at(path)?;
    let bad = |offset: usize, what: String| {
        Error::Data(format!(
            "{}: the record at byte {offset} {what}",
            path.display()
        ))
    };
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < 12 {
            let what = format!("is truncated: {} bytes of its 12-byte header", rest.len());
            return Ok((records, Some(bad(offset, what))));
        }
        let len_bytes = &rest[..8];
        let header_crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        if masked_crc32c(len_bytes) != header_crc {
            return Ok((
                records,
                Some(bad(offset, "has a bad length checksum".into())),
            ));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let available = (rest.len() - 12) as u64;
        if available < len.saturating_add(4) {
            let what =
                format!("is truncated: {len} bytes of data and a checksum, {available} left");
            return Ok((records, Some(bad(offset, what))));
        }
        let len = len as usize;
        let data = &rest[12..12 + len];
        let data_crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().expect("4 bytes"));
        if masked_crc32c(data) != data_crc {
            return Ok((records, Some(bad(offset, "has a bad data checksum".into()))));
        }
        records.push(data.to_vec());
        offset += 16 + len;
    }
    Ok((records, None))
}

/// The events of the event file at `path`, read with [`read_records`] and decoded.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    read_records(path)?
        .iter()
        .enumerate()
        .map(|(i, data)| {
            Event::decode(data.as_slice()).map_err(|e| {
                Error::Data(format!(
                    "{}: record {i} is not an event: {e}",
                    path.display()
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc32c_of_known_inputs() {
        // CRC-32C of b"123456789" is 0xE3069283. By hand:
        //   crc >> 15         = 0x0001_C60D
        //   crc << 17 (u32)   = (0xE3069283 & 0x7FFF) << 17 = 0x1283 << 17 = 0x2506_0000
        //   or                = 0x2507_C60D
        //   + 0xA282_EAD8     = 0xC78A_B0E5 (no overflow past 32 bits)
        // TensorBoard's own masked_crc32c gives the same 0xc78ab0e5.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        // The CRC of nothing is 0, so its mask is the constant alone.
        assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
    }

    #[test]
    fn the_file_version_record_is_byte_exact() {
        let event = Event {
            wall_time: 0.0,
            step: 0,
            what: Some(EventWhat::FileVersion(FILE_VERSION.into())),
        };
        // Field 3 (wire type 2: tag byte 0x1a), 13 bytes of "brain.Event:2"; the zero
        // wall time and step are not written.
        let mut data = vec![0x1a, 0x0d];
        data.extend_from_slice(b"brain.Event:2");
        assert_eq!(event.encode_to_vec(), data);
        // The record as TensorBoard's own RecordWriter writes this event (Python:
        // RecordWriter(io.BytesIO()).write(Event(wall_time=0.0,
        // file_version='brain.Event:2').SerializeToString())).
        let mut expected = vec![0x0f, 0, 0, 0, 0, 0, 0, 0]; // length 15
        expected.extend_from_slice(&[0x6d, 0x53, 0x2b, 0x09]); // masked CRC of the length
        expected.extend_from_slice(&data);
        expected.extend_from_slice(&[0xfc, 0x98, 0x51, 0x29]); // masked CRC of the data
        assert_eq!(event_record(&event), expected);
    }

    fn summary_values(event: &Event) -> &[SummaryValue] {
        match &event.what {
            Some(EventWhat::Summary(s)) => &s.value,
            other => panic!("not a summary: {other:?}"),
        }
    }

    fn only_value(event: &Event) -> &SummaryValue {
        let values = summary_values(event);
        assert_eq!(values.len(), 1);
        &values[0]
    }

    fn hparams_data(value: &SummaryValue) -> HParamsData {
        let plugin = value
            .metadata
            .as_ref()
            .unwrap()
            .plugin_data
            .as_ref()
            .unwrap();
        assert_eq!(plugin.plugin_name, HPARAMS_PLUGIN);
        let data = HParamsPluginData::decode(plugin.content.as_slice()).unwrap();
        assert_eq!(data.version, 0);
        data.data.unwrap()
    }

    /// Writes one of each kind of summary into a fresh event file in `dir`.
    fn write_all_kinds(dir: &Path) -> EventWriter {
        let mut w = EventWriter::create(dir).unwrap();
        w.scalars(3, &[("loss/train", 1.25), ("kl", 0.5)]).unwrap();
        w.image(4, "samples", b"\x89PNG fake", 28, 56, 1).unwrap();
        w.text(5, "config", "# Run\n`beta = 1`").unwrap();
        w.hparams_experiment(
            &[
                ("lr", HParamKind::Number),
                ("bottleneck", HParamKind::Text),
                ("flip", HParamKind::Bool),
            ],
            &["loss/train"],
        )
        .unwrap();
        w.hparams_session_start(&[
            ("lr", HParamValue::Number(3e-4)),
            ("bottleneck", HParamValue::Text("vib".into())),
            ("flip", HParamValue::Bool(true)),
        ])
        .unwrap();
        w.hparams_session_end(true).unwrap();
        w
    }

    #[test]
    fn written_events_read_back_record_by_record() {
        let dir = tempfile::tempdir().unwrap();
        let w = write_all_kinds(dir.path());
        let name = w.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let host_pid_counter = name.trim_start_matches("events.out.tfevents.");
        let parts: Vec<_> = host_pid_counter.split('.').collect();
        assert!(parts[0].parse::<u64>().unwrap() > 1_500_000_000, "{name}");
        let pid = std::process::id().to_string();
        assert_eq!(parts[parts.len() - 2], pid, "{name}");
        assert!(parts[parts.len() - 1].parse::<u64>().is_ok(), "{name}");

        // Read while the writer lives: every call has flushed its records.
        let bytes = std::fs::read(w.path()).unwrap();
        let records = read_records(w.path()).unwrap();
        assert_eq!(records.len(), 7);
        // Walk the framing by hand: lengths, both checksums, and nothing left over.
        let mut offset = 0;
        for data in &records {
            let len = u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
            assert_eq!(len as usize, data.len());
            let crc = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(&bytes[offset..offset + 8]));
            assert_eq!(
                &bytes[offset + 12..offset + 12 + data.len()],
                data.as_slice()
            );
            let end = offset + 12 + data.len();
            let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            offset = end + 4;
        }
        assert_eq!(offset, bytes.len());

        let events = read_events(w.path()).unwrap();
        assert_eq!(
            events[0].what,
            Some(EventWhat::FileVersion(FILE_VERSION.into()))
        );
        assert!(events.iter().all(|e| e.wall_time > 1.5e9));

        assert_eq!(events[1].step, 3);
        let scalars: Vec<_> = summary_values(&events[1])
            .iter()
            .map(|v| (v.tag.as_str(), v.value.clone()))
            .collect();
        assert_eq!(
            scalars,
            [
                ("loss/train", Some(SummaryValueKind::SimpleValue(1.25))),
                ("kl", Some(SummaryValueKind::SimpleValue(0.5))),
            ]
        );

        assert_eq!(events[2].step, 4);
        let image = only_value(&events[2]);
        assert_eq!(image.tag, "samples");
        assert_eq!(
            image.value,
            Some(SummaryValueKind::Image(SummaryImage {
                height: 28,
                width: 56,
                colorspace: 1,
                encoded_image_string: b"\x89PNG fake".to_vec(),
            }))
        );

        assert_eq!(events[3].step, 5);
        let text = only_value(&events[3]);
        assert_eq!(text.tag, "config");
        let plugin = text
            .metadata
            .as_ref()
            .unwrap()
            .plugin_data
            .as_ref()
            .unwrap();
        assert_eq!(plugin.plugin_name, TEXT_PLUGIN);
        assert!(plugin.content.is_empty());
        let Some(SummaryValueKind::Tensor(t)) = &text.value else {
            panic!("text is not a tensor: {text:?}");
        };
        assert_eq!(t.dtype, DT_STRING);
        assert_eq!(t.tensor_shape, Some(TensorShapeProto::default()));
        assert_eq!(t.string_val, [b"# Run\n`beta = 1`".to_vec()]);

        for e in &events[4..] {
            assert_eq!(e.step, 0);
            let Some(SummaryValueKind::Tensor(t)) = &only_value(e).value else {
                panic!("an hparams summary without its tensor");
            };
            assert_eq!(
                (t.dtype, t.tensor_shape.as_ref().unwrap().dim.len()),
                (DT_FLOAT, 1)
            );
            assert!(t.float_val.is_empty());
        }
        let experiment = only_value(&events[4]);
        assert_eq!(experiment.tag, HPARAMS_EXPERIMENT_TAG);
        let HParamsData::Experiment(x) = hparams_data(experiment) else {
            panic!("not an experiment");
        };
        let infos: Vec<_> = x
            .hparam_infos
            .iter()
            .map(|h| (h.name.as_str(), h.r#type))
            .collect();
        assert_eq!(infos, [("lr", 3), ("bottleneck", 1), ("flip", 2)]);
        assert_eq!(x.metric_infos.len(), 1);
        assert_eq!(x.metric_infos[0].name.as_ref().unwrap().tag, "loss/train");

        let start = only_value(&events[5]);
        assert_eq!(start.tag, HPARAMS_SESSION_START_TAG);
        let HParamsData::SessionStartInfo(s) = hparams_data(start) else {
            panic!("not a session start");
        };
        let kinds: Vec<_> = s
            .hparams
            .iter()
            .map(|(k, v)| (k.as_str(), v.kind.clone().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("bottleneck", ProtoValueKind::StringValue("vib".into())),
                ("flip", ProtoValueKind::BoolValue(true)),
                ("lr", ProtoValueKind::NumberValue(3e-4)),
            ]
        );
        assert!(s.start_time_secs > 1.5e9);

        let end = only_value(&events[6]);
        assert_eq!(end.tag, HPARAMS_SESSION_END_TAG);
        let HParamsData::SessionEndInfo(e) = hparams_data(end) else {
            panic!("not a session end");
        };
        assert_eq!(e.status, STATUS_SUCCESS);
        assert!(e.end_time_secs >= s.start_time_secs);
    }

    #[test]
    fn two_writers_in_one_directory_get_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(read_events(b.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_error() {
        let dir = tempfile::tempdir().unwrap();
        let w = write_all_kinds(dir.path());
        let good = std::fs::read(w.path()).unwrap();
        let first_len = 16 + read_records(w.path()).unwrap()[0].len();

        // A byte in the second record's data.
        let mut bytes = good.clone();
        bytes[first_len + 20] ^= 0x01;
        std::fs::write(w.path(), &bytes).unwrap();
        let msg = read_records(w.path()).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("record at byte {first_len} ")),
            "{msg}"
        );
        assert!(msg.contains("bad data checksum"), "{msg}");
        assert!(read_events(w.path()).is_err());

        // A byte in the first record's length.
        let mut bytes = good;
        bytes[0] ^= 0x01;
        std::fs::write(w.path(), &bytes).unwrap();
        let msg = read_records(w.path()).unwrap_err().to_string();
        assert!(msg.contains("record at byte 0 "), "{msg}");
        assert!(msg.contains("bad length checksum"), "{msg}");
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let w = write_all_kinds(dir.path());
        let good = std::fs::read(w.path()).unwrap();
        let first_len = 16 + read_records(w.path()).unwrap()[0].len();
        // Cut inside the second record's header, its data, and its last checksum.
        for cut in [first_len + 5, first_len + 20, good.len() - 1] {
            std::fs::write(w.path(), &good[..cut]).unwrap();
            let err = read_records(w.path()).unwrap_err().to_string();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
        // Cut exactly between records: the whole records before the cut are read.
        std::fs::write(w.path(), &good[..first_len]).unwrap();
        assert_eq!(read_records(w.path()).unwrap().len(), 1);
        // An empty file has no records.
        std::fs::write(w.path(), b"").unwrap();
        assert!(read_records(w.path()).unwrap().is_empty());
    }

    #[test]
    fn a_huge_length_is_a_truncation_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.huge");
        let len = u64::MAX.to_le_bytes();
        let mut bytes = len.to_vec();
        bytes.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        bytes.extend_from_slice(b"abcd");
        std::fs::write(&path, &bytes).unwrap();
        let err = read_records(&path).unwrap_err().to_string();
        assert!(err.contains("record at byte 0 is truncated"), "{err}");
    }

    /// Writes one of each kind of summary into the directory named by
    /// `IBVAE_TENSORBOARD_DIR`, for reading with TensorBoard itself.
    #[test]
    #[ignore = "writes to IBVAE_TENSORBOARD_DIR for a check with TensorBoard"]
    fn write_for_tensorboard() {
        let dir = std::env::var_os("IBVAE_TENSORBOARD_DIR").expect("IBVAE_TENSORBOARD_DIR");
        let mut w = write_all_kinds(Path::new(&dir));
        w.scalars(10, &[("loss/train", 0.75)]).unwrap();
        // A real 3 x 2 RGB PNG.
        let mut png_bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut png_bytes, 2, 3);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut png_writer = enc.write_header().unwrap();
        png_writer.write_image_data(&[200; 18]).unwrap();
        png_writer.finish().unwrap();
        w.image(10, "real_png", &png_bytes, 3, 2, 3).unwrap();
        eprintln!("{}", w.path().display());
    }
}
