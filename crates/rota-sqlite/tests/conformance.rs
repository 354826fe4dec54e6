//! The SQLite backend against the one Store specification.
rota_store::conformance_tests!(
    rota_testkit::sqlite_subject,
    rota_testkit::sqlite_subject_older
);
