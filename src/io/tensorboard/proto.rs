//! The protocol-buffer messages of TensorBoard's event files, declared in Rust with the
//! field numbers of TensorFlow's and TensorBoard's `.proto` files
//! (`tensorboard/compat/proto/event.proto`, `summary.proto`, `tensor.proto`,
//! `tensor_shape.proto`, `types.proto`, and `tensorboard/plugins/hparams/api.proto` and
//! `plugin_data.proto`), so that neither `protoc` nor Python is needed to build the crate.
//! Only the fields this crate writes or inspects are declared; the decoder skips the
//! others.

use std::collections::BTreeMap;

/// The file version that the first event of every event file holds.
pub const FILE_VERSION: &str = "brain.Event:2";

/// TensorFlow's `DataType` value for 32-bit floats (`DT_FLOAT` in `types.proto`).
pub const DT_FLOAT: i32 = 1;
/// TensorFlow's `DataType` value for byte strings (`DT_STRING` in `types.proto`).
pub const DT_STRING: i32 = 7;

/// The name of TensorBoard's text plugin, which shows markdown.
pub const TEXT_PLUGIN: &str = "text";
/// The name of TensorBoard's hyperparameter plugin.
pub const HPARAMS_PLUGIN: &str = "hparams";
/// The tag of the summary that describes the experiment's hyperparameters and metrics.
pub const HPARAMS_EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// The tag of the summary that holds one session's hyperparameter values.
pub const HPARAMS_SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// The tag of the summary that holds how one session ended.
pub const HPARAMS_SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// The status of a session that ended well (`STATUS_SUCCESS` in `api.proto`).
pub const STATUS_SUCCESS: i32 = 1;
/// The status of a session that failed (`STATUS_FAILURE` in `api.proto`).
pub const STATUS_FAILURE: i32 = 2;

/// One event of an event file (`tensorflow.Event` in `event.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// When the event happened, in seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The training step the event belongs to.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event holds: the file version or a summary.
    #[prost(oneof = "EventWhat", tags = "3, 5")]
    pub what: Option<EventWhat>,
}

/// What an [`Event`] holds (the `what` oneof of `event.proto`).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventWhat {
    /// The format version of the file, in its first event ([`FILE_VERSION`]).
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// A set of tagged values.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// A set of tagged values written at one step (`tensorflow.Summary` in `summary.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values, each with its tag.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// One tagged value of a [`Summary`] (`Summary.Value` in `summary.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// The name of the series the value belongs to.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Which plugin shows the value, and how.
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    /// The value itself.
    #[prost(oneof = "SummaryValueKind", tags = "2, 4, 8")]
    pub value: Option<SummaryValueKind>,
}

/// The value of a [`SummaryValue`] (the `value` oneof of `summary.proto`).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SummaryValueKind {
    /// A scalar, shown by the scalars plugin.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    /// An encoded image, shown by the images plugin.
    #[prost(message, tag = "4")]
    Image(SummaryImage),
    /// A tensor, read by the plugin that the value's metadata names.
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// An encoded image (`Summary.Image` in `summary.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryImage {
    /// The image's height in pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// The image's width in pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// The channels: 1 grey, 2 grey and alpha, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// The image file's bytes (PNG here).
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// What a series of values is and which plugin reads it (`SummaryMetadata` in
/// `summary.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// The plugin that reads the values, and its own data about them.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    /// The name to show instead of the tag; empty for the tag.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// A longer description in markdown; may be empty.
    #[prost(string, tag = "3")]
    pub summary_description: String,
    /// The `DataClass` of the values (0 for unknown, as the plugins here write it).
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// A plugin's name and its own serialized data (`SummaryMetadata.PluginData`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    /// The plugin's name, such as "text" or "hparams".
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// The plugin's data, usually a serialized protocol buffer of its own.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// A tensor (`TensorProto` in `tensor.proto`), with the representations used here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// The element type, a TensorFlow `DataType` value such as [`DT_STRING`].
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// The shape; a shape without dimensions is a scalar.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// The elements in TensorFlow's raw layout, when not given in a typed list below.
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    /// The elements of a `DT_FLOAT` tensor.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// The elements of a `DT_DOUBLE` tensor.
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    /// The elements of a `DT_STRING` tensor.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// The shape of a tensor (`TensorShapeProto` in `tensor_shape.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first; none for a scalar.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
    /// Whether the number of dimensions is unknown.
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

/// One dimension of a tensor's shape (`TensorShapeProto.Dim`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeDim {
    /// The dimension's size.
    #[prost(int64, tag = "1")]
    pub size: i64,
    /// An optional name for the dimension.
    #[prost(string, tag = "2")]
    pub name: String,
}

/// The hparams plugin's data in a summary's metadata (`HParamsPluginData` in
/// `tensorboard/plugins/hparams/plugin_data.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    /// The version of this data's layout; TensorBoard reads version 0.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// The experiment, a session's start, or a session's end.
    #[prost(oneof = "HParamsData", tags = "2, 3, 4")]
    pub data: Option<HParamsData>,
}

/// What an [`HParamsPluginData`] holds (its `data` oneof).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HParamsData {
    /// The hyperparameters and metrics of the experiment.
    #[prost(message, tag = "2")]
    Experiment(HParamsExperiment),
    /// A session's hyperparameter values.
    #[prost(message, tag = "3")]
    SessionStartInfo(SessionStartInfo),
    /// How a session ended.
    #[prost(message, tag = "4")]
    SessionEndInfo(SessionEndInfo),
}

/// The hyperparameters and metrics of an experiment (`Experiment` in `api.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsExperiment {
    /// A description in markdown; may be empty.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Who runs the experiment; may be empty.
    #[prost(string, tag = "2")]
    pub user: String,
    /// When the experiment was created, in seconds since the Unix epoch.
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    /// The hyperparameters.
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    /// The metrics.
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
    /// The experiment's name; may be empty.
    #[prost(string, tag = "6")]
    pub name: String,
}

/// One hyperparameter of an experiment (`HParamInfo` in `api.proto`, without a domain).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamInfo {
    /// The hyperparameter's name, as in the sessions' values.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The name to show instead; empty for the name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// A description in markdown; may be empty.
    #[prost(string, tag = "3")]
    pub description: String,
    /// The value type, an `api.proto` `DataType` (see [`HParamKind::data_type`]).
    #[prost(int32, tag = "4")]
    pub r#type: i32,
}

/// One metric of an experiment (`MetricInfo` in `api.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricInfo {
    /// The metric's group and scalar tag.
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
    /// The name to show instead; empty for the tag.
    #[prost(string, tag = "3")]
    pub display_name: String,
    /// A description in markdown; may be empty.
    #[prost(string, tag = "4")]
    pub description: String,
    /// The `DatasetType` (0 for unknown).
    #[prost(int32, tag = "5")]
    pub dataset_type: i32,
}

/// The name of a metric (`MetricName` in `api.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricName {
    /// The run's subdirectory, relative to the session's; empty for the session's own.
    #[prost(string, tag = "1")]
    pub group: String,
    /// The tag of the metric's scalars.
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// The start of one session (`SessionStartInfo` in `plugin_data.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    /// The session's hyperparameter values, by name.
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, ProtoValue>,
    /// Where the session's model is saved; may be empty.
    #[prost(string, tag = "2")]
    pub model_uri: String,
    /// A page that watches the session; may be empty.
    #[prost(string, tag = "3")]
    pub monitor_url: String,
    /// The session's group; empty for a group of its own.
    #[prost(string, tag = "4")]
    pub group_name: String,
    /// When the session started, in seconds since the Unix epoch.
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// The end of one session (`SessionEndInfo` in `plugin_data.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionEndInfo {
    /// How it ended: [`STATUS_SUCCESS`] or [`STATUS_FAILURE`].
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// When the session ended, in seconds since the Unix epoch.
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// A dynamically typed value (`google.protobuf.Value`, with the kinds used here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    /// The value; `None` for a kind not declared here.
    #[prost(oneof = "ProtoValueKind", tags = "2, 3, 4")]
    pub kind: Option<ProtoValueKind>,
}

/// The kind of a [`ProtoValue`] (the `kind` oneof of `google.protobuf.Value`).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ProtoValueKind {
    /// A number.
    #[prost(double, tag = "2")]
    NumberValue(f64),
    /// A string.
    #[prost(string, tag = "3")]
    StringValue(String),
    /// A boolean.
    #[prost(bool, tag = "4")]
    BoolValue(bool),
}
