//! The PostgreSQL backend against the one Store specification.
rota_store::conformance_tests!(
    rota_testkit::postgres_subject,
    rota_testkit::postgres_subject_older
);
