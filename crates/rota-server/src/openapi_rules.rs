//! What the server checks beyond types, stated in the OpenAPI document: job ids are UUIDs,
//! names have their alphabets and lengths, numbers their bounds, durations and rates their
//! forms, and some fields exclude each other. A client generated from the document (or a
//! fuzzer) then sends what the server takes; Schemathesis checks it (S1, with its
//! `positive_data_acceptance` check). The rules are the core's (`rota_core::validation`);
//! what a schema cannot say (that a debounce's `max_wait` is at least its `period`, which
//! cron expressions and time zones exist, no NUL inside free-form JSON) is in descriptions.

use serde_json::{json, Map, Value};

use rota_core::validation::{MAX_KIND_LEN, MAX_QUEUE_NAME_LEN, MAX_SCHEDULE_NAME_LEN};

/// A queue name: 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`, starting with a letter or digit
/// (`validate_queue_name`).
fn queue_pattern() -> String {
    format!("^[a-z0-9][a-z0-9_.-]{{0,{}}}$", MAX_QUEUE_NAME_LEN - 1)
}

/// A kind: 1 to 128 of ASCII letters, digits, `_`, `-`, `.`, `:`, starting with a letter or
/// digit (`validate_kind`).
fn kind_pattern() -> String {
    format!("^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{}}}$", MAX_KIND_LEN - 1)
}

/// A schedule name: 1 to 128 characters without `:` (or NUL) (`ScheduleDef::validate`).
fn schedule_pattern() -> String {
    format!("^[^:\\u0000]{{1,{MAX_SCHEDULE_NAME_LEN}}}$")
}
/// Text without NUL, which no store keeps.
const TEXT: &str = "^[^\\u0000]*$";
/// A worker id: some text that is not only spaces.
const WORKER: &str = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$";
/// A duration in its simple form (the server also reads `1h 30m` and ISO 8601 `PT5M`).
const DURATION: &str = "^[0-9]{1,6}(ms|s|m|h|d)$";
/// A duration within the ten-year horizon.
const DURATION_HORIZON: &str = "^[0-9]{1,3}(ms|s|m|h|d)$";
/// A duration of at least 1 ms, within the horizon.
const DURATION_POSITIVE: &str = "^[1-9][0-9]{0,2}(ms|s|m|h|d)$";
/// A duration of at least 1 s.
const DURATION_SECOND: &str = "^[1-9][0-9]{0,5}(s|m|h|d)$";
/// A wait: at most 60 s.
const WAIT: &str = "^([0-9]|[1-5][0-9]|60)s$|^[0-9]{1,3}ms$";
/// A rate: a count per period, with an optional burst (`100/1m`, `10/1s burst 5`).
const RATE: &str = "^[1-9][0-9]{0,8}/([1-9][0-9]{0,2})?(ms|s|m|h|d)( burst [1-9][0-9]{0,8})?$";
/// Tags, unique and flow-control keys: 1 to 255 characters.
const LABEL_MAX: u64 = rota_core::validation::MAX_LABEL_LEN as u64;

/// States the rules in `doc`, the document as JSON. Panics when a rule names a schema,
/// property, path or parameter the document does not have (a renamed field): the document
/// is built at start-up and by the OpenAPI test, so a stale rule cannot go unnoticed.
pub fn state_rules(doc: &mut Value) {
    let text = json!({"pattern": TEXT});
    let label = json!({"minLength": 1, "maxLength": LABEL_MAX, "pattern": TEXT});
    let queue = json!({"pattern": queue_pattern()});
    let kind = json!({"pattern": kind_pattern()});
    let uuid = json!({"format": "uuid"});
    let attempts = json!({"minimum": 1});
    let priority = json!({"minimum": 0, "maximum": rota_core::validation::PRIORITY_MAX});

    let mut schemas = Schemas(doc.pointer_mut("/components/schemas").expect("schemas"));
    // Jobs.
    schemas.props(
        "NewJobRequest",
        &[
            ("queue", &queue),
            ("kind", &kind),
            ("priority", &priority),
            ("max_attempts", &attempts),
            ("delay", &json!({"pattern": DURATION_HORIZON})),
            ("timeout", &json!({"pattern": DURATION_SECOND})),
            ("unique_for", &json!({"pattern": DURATION})),
            ("unique_key", &label),
            ("concurrency_key", &label),
        ],
    );
    schemas.items(
        "NewJobRequest",
        "tags",
        &label,
        Some(rota_core::validation::MAX_TAGS),
    );
    schemas.props("EnqueueManyRequest", &[("jobs", &json!({"minItems": 1}))]);
    schemas.exclusive(
        "NewJobRequest",
        &[
            &["run_at", "delay"],
            &["debounce", "throttle"],
            &["debounce", "run_at"],
            &["debounce", "delay"],
            &["debounce", "unique_key"],
            &["throttle", "unique_key"],
        ],
    );
    for collapse in ["DebounceRequest", "ThrottleRequest"] {
        schemas.props(
            collapse,
            &[
                ("key", &label),
                ("period", &json!({"pattern": DURATION_POSITIVE})),
            ],
        );
    }
    schemas.props(
        "DebounceRequest",
        &[("max_wait", &json!({"pattern": DURATION_POSITIVE}))],
    );
    schemas.items("JobSelection", "ids", &uuid, None);
    schemas.items("JobSelection", "queues", &queue, None);
    schemas.items("JobSelection", "kinds", &kind, None);
    schemas.props("JobSelection", &[("group", &text)]);
    schemas.add(
        "JobSelection",
        "anyOf",
        json!([
            {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
            {"required": ["queues"], "properties": {"queues": {"minItems": 1}}},
            {"required": ["kinds"], "properties": {"kinds": {"minItems": 1}}},
            {"required": ["group"], "properties": {"group": {"type": "string"}}},
        ]),
    );
    // The worker protocol.
    let worker = json!({"pattern": WORKER});
    schemas.props(
        "FetchRequest",
        &[
            ("worker", &worker),
            ("wait", &json!({"pattern": WAIT})),
            ("name", &text),
            ("host", &text),
            ("version", &text),
        ],
    );
    schemas.items("FetchRequest", "queues", &queue, None);
    schemas.props("FetchRequest", &[("queues", &json!({"minItems": 1}))]);
    schemas.items("FetchRequest", "kinds", &kind, None);
    schemas.props("HeartbeatRequest", &[("worker", &worker)]);
    for lease in ["LeaseToken", "CompletionRequest", "FailureRequest"] {
        schemas.props(lease, &[("job", &uuid)]);
    }
    schemas.props(
        "FailureRequest",
        &[("snooze", &json!({"pattern": DURATION}))],
    );
    schemas.add(
        "FailureRequest",
        "not",
        json!({"required": ["snooze", "discard"],
               "properties": {"snooze": {"type": "string"}, "discard": {"const": true}}}),
    );
    schemas.props("ProgressRequest", &[("percent", &json!({"maximum": 100}))]);
    // Queues.
    let at_least_one = json!({"minimum": 1});
    schemas.props(
        "QueueDeclareRequest",
        &[
            ("max_attempts", &attempts),
            ("lease", &json!({"pattern": DURATION_SECOND})),
            ("timeout", &json!({"pattern": DURATION_SECOND})),
            ("concurrency", &at_least_one),
            ("key_concurrency", &at_least_one),
            ("max_depth", &at_least_one),
            ("completed_retention", &json!({"pattern": DURATION})),
            ("cancelled_retention", &json!({"pattern": DURATION})),
            ("dead_retention", &json!({"pattern": DURATION})),
            ("max_age", &json!({"pattern": DURATION})),
            ("rate", &json!({"pattern": RATE})),
            ("key_rate", &json!({"pattern": RATE})),
            ("overflow", &json!({"enum": ["reject", "accept", null]})),
            (
                "key_weights",
                &json!({"propertyNames": {"pattern": TEXT},
                        "additionalProperties": {"type": "integer", "minimum": 1, "maximum": u32::MAX}}),
            ),
            (
                "kind_rates",
                &json!({"propertyNames": {"pattern": kind_pattern()},
                        "additionalProperties": {"type": "string", "pattern": RATE}}),
            ),
        ],
    );
    // Schedules.
    schemas.props(
        "ScheduleRequest",
        &[
            ("name", &json!({"pattern": schedule_pattern()})),
            ("queue", &queue),
            ("kind", &kind),
            ("priority", &priority),
            ("max_attempts", &attempts),
            ("timeout", &json!({"pattern": DURATION_SECOND})),
            ("backfill", &json!({"pattern": DURATION})),
        ],
    );
    // Backoffs: each tagged form is an object of exactly one key, a list of intervals has
    // one at least, and an exponential backoff's factor and jitter have their ranges.
    // Shown backoffs keep the schema without rules: the server shows durations in their
    // parts (`90s` as `1m 30s`), which the simple form requests use does not cover.
    split_shown_backoffs(doc);
    let interval = json!({"type": "string", "pattern": DURATION});
    let forms = doc
        .pointer_mut("/components/schemas/BackoffForm/oneOf")
        .and_then(Value::as_array_mut)
        .expect("BackoffForm's forms");
    for form in forms {
        merge(form, &json!({"additionalProperties": false}));
        if let Some(list) = form.pointer_mut("/properties/intervals") {
            merge(list, &json!({"minItems": 1}));
            merge(&mut list["items"], &interval);
        }
    }
    let mut schemas = Schemas(doc.pointer_mut("/components/schemas").expect("schemas"));
    schemas.props(
        "ExponentialBackoff",
        &[
            ("factor", &json!({"minimum": 1})),
            ("jitter", &json!({"minimum": 0, "maximum": 1})),
            ("initial", &interval),
            ("max", &interval),
        ],
    );
    schemas.props("FixedBackoff", &[("interval", &interval)]);
    let list = doc
        .pointer_mut("/components/schemas/BackoffSchema/oneOf/0")
        .expect("BackoffSchema's list form");
    merge(list, &json!({"minItems": 1}));
    merge(&mut list["items"], &interval);

    // Parameters, by name.
    let limit = json!({"minimum": 1, "maximum": rota_store::PAGE_LIMIT_MAX});
    let time = json!({"format": "date-time"});
    let schedule = json!({"pattern": schedule_pattern()});
    let wait = json!({"pattern": WAIT});
    let returns = json!({"enum": ["ids", "jobs"]});
    let paths = doc
        .pointer_mut("/paths")
        .and_then(Value::as_object_mut)
        .expect("paths");
    for (path, item) in paths.iter_mut() {
        for operation in item.as_object_mut().expect("a path item").values_mut() {
            if let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            {
                for parameter in parameters {
                    let rule = match parameter["name"].as_str().unwrap_or_default() {
                        "id" | "after" => &uuid,
                        "name" if path.starts_with("/v1/queues") => &queue,
                        "name" if path.starts_with("/v1/schedules") => &schedule,
                        "queue" => &queue,
                        "kind" => &kind,
                        "tag" => &label,
                        "group" => &text,
                        "limit" => &limit,
                        "wait" => &wait,
                        "created_after" | "created_before" => &time,
                        "return" => &returns,
                        _ => continue,
                    };
                    merge(&mut parameter["schema"], rule);
                }
            }
        }
    }
    // `PUT /v1/queues/{name}` without a body declares the queue with defaults.
    doc["paths"]["/v1/queues/{name}"]["put"]["requestBody"]["required"] = json!(false);
}

/// The backoff schemas, and their copies for what the server shows.
const SHOWN: [(&str, &str); 4] = [
    ("BackoffSchema", "BackoffShown"),
    ("BackoffForm", "BackoffFormShown"),
    ("ExponentialBackoff", "ExponentialBackoffShown"),
    ("FixedBackoff", "FixedBackoffShown"),
];

/// Copies the backoff schemas ([`SHOWN`]) and points the views (responses) at the copies,
/// so that rules added to the request schemas do not apply to what the server shows.
fn split_shown_backoffs(doc: &mut Value) {
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .expect("schemas");
    let repoint_all = |schema: &mut Value| {
        for (from, to) in SHOWN {
            repoint(
                schema,
                &format!("#/components/schemas/{from}"),
                &format!("#/components/schemas/{to}"),
            );
        }
    };
    let copies: Vec<(&str, Value)> = SHOWN
        .iter()
        .map(|(from, to)| {
            let mut copy = schemas
                .get(*from)
                .unwrap_or_else(|| panic!("no schema {from} in the document"))
                .clone();
            repoint_all(&mut copy);
            (*to, copy)
        })
        .collect();
    for (name, schema) in schemas.iter_mut() {
        if name.ends_with("View") {
            repoint_all(schema);
        }
    }
    for (name, copy) in copies {
        schemas.insert(name.into(), copy);
    }
}

/// Replaces every `$ref` to `from` in `schema` with `to`.
fn repoint(schema: &mut Value, from: &str, to: &str) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "$ref" && value == from {
                    *value = json!(to);
                } else {
                    repoint(value, from, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| repoint(v, from, to)),
        _ => {}
    }
}

/// The document's component schemas.
struct Schemas<'a>(&'a mut Value);

impl Schemas<'_> {
    fn schema(&mut self, name: &str) -> &mut Value {
        self.0
            .get_mut(name)
            .unwrap_or_else(|| panic!("no schema {name} in the document"))
    }

    fn prop(&mut self, schema: &str, prop: &str) -> &mut Value {
        self.schema(schema)
            .pointer_mut(&format!("/properties/{prop}"))
            .unwrap_or_else(|| panic!("no property {schema}.{prop} in the document"))
    }

    fn props(&mut self, schema: &str, rules: &[(&str, &Value)]) {
        for (prop, rule) in rules {
            merge(self.prop(schema, prop), rule);
        }
    }

    fn items(&mut self, schema: &str, prop: &str, rule: &Value, max: Option<usize>) {
        let list = self.prop(schema, prop);
        merge(&mut list["items"], rule);
        if let Some(max) = max {
            merge(list, &json!({"maxItems": max}));
        }
    }

    fn add(&mut self, schema: &str, key: &str, value: Value) {
        self.schema(schema)[key] = value;
    }

    /// Fields that may not be given together (each pair).
    fn exclusive(&mut self, schema: &str, pairs: &[&[&str]]) {
        let nots: Vec<Value> = pairs
            .iter()
            .map(|pair| json!({"not": {"required": pair}}))
            .collect();
        self.add(schema, "allOf", Value::Array(nots));
    }
}

/// Adds `rule`'s keys to `schema` (an object).
fn merge(schema: &mut Value, rule: &Value) {
    let schema: &mut Map<String, Value> = schema.as_object_mut().expect("a schema is an object");
    for (key, value) in rule.as_object().expect("a rule is an object") {
        schema.insert(key.clone(), value.clone());
    }
}
