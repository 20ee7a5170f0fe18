//! Migrations that rewrite data: rows written by an older schema read back as the new one.

use std::time::{Duration, UNIX_EPOCH};

use agent_core::{SessionId, TokenUsage};
use agent_storage::{ConversationStore, PostgresStore, StoredResponse};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// The migrations before `version`, applied as diesel would have, on a fresh database.
async fn database_before(version: &str) -> String {
    let url = test_support::fresh_database_url().await;
    let mut connection = AsyncPgConnection::establish(&url).await.unwrap();
    connection
        .batch_execute(
            "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        )
        .await
        .unwrap();
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut names: Vec<String> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let applied = name.split('_').next().unwrap().replace('-', "");
        if applied.as_str() >= version {
            break;
        }
        let up = std::fs::read_to_string(directory.join(&name).join("up.sql")).unwrap();
        connection.batch_execute(&up).await.unwrap();
        connection
            .batch_execute(&format!(
                "INSERT INTO __diesel_schema_migrations (version) VALUES ('{applied}')"
            ))
            .await
            .unwrap();
    }
    url
}

/// Responses kept as the API's JSON become records with the same facts (one without a format
/// reads as none), and so does one a previous release writes after the migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_kept_as_json_become_records() {
    let url = database_before("20261207000001").await;
    let mut connection = AsyncPgConnection::establish(&url).await.unwrap();
    let body = |id: &str, format: &str| {
        format!(
            r#"{{"id":"{id}","object":"response","created_at":1800000000,"status":"completed","error":null,
            "incomplete_details":null,"instructions":"Be brief.","max_output_tokens":100,"model":"agent",
            "output":[{{"type":"message","id":"msg_1","status":"completed","role":"assistant",
            "content":[{{"type":"output_text","text":"It is 42.","annotations":[]}}]}}],
            "parallel_tool_calls":true,"previous_response_id":null,"reasoning":{{"effort":null,"summary":null}},
            "store":true,"temperature":0.5,"text":{{"format":{format}}},"tool_choice":"auto","tools":[],
            "top_p":null,"truncation":"disabled","usage":{{"input_tokens":12,"input_tokens_details":{{"cached_tokens":0}},
            "output_tokens":4,"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":16}},
            "user":"end-user-7","metadata":{{"topic":"tests"}}}}"#
        )
    };
    let (formatted, plain) = (format!("resp_{:032x}", 1), format!("resp_{:032x}", 2));
    connection
        .batch_execute(&format!(
            "INSERT INTO sessions (id, next_sequence, turn_count) VALUES ('old', 4, 2); \
             INSERT INTO responses (id, session_id, sequence, body) VALUES \
             ('{formatted}', 'old', 2, '{}'), ('{plain}', 'old', 4, '{}')",
            body(&formatted, r#"{"type":"json_object"}"#),
            body(&plain, r#"{"type":"text"}"#),
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect(&test_support::postgres_options(&url)).unwrap();
    store.migrate().await.unwrap();
    // The rows above hold these parameters, in the JSON the API answered.
    let parameters = crate::conversations::response_parameters();
    let expected = StoredResponse {
        id: formatted.clone(),
        session: SessionId::parse_stored("old").unwrap(),
        sequence: 2,
        created_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        parameters: parameters.clone(),
        output_text: "It is 42.".into(),
        usage: TokenUsage {
            prompt_tokens: 12,
            completion_tokens: 4,
        },
    };
    assert_eq!(store.response(&formatted).await.unwrap(), Some(expected));
    let plain = store.response(&plain).await.unwrap().unwrap();
    assert_eq!(plain.parameters.text_format, None);

    // A replica of the previous release, still running during a rolling upgrade, writes a
    // response as it did: it is kept, and read as a record.
    let during = format!("resp_{:032x}", 3);
    connection
        .batch_execute(&format!(
            "UPDATE sessions SET next_sequence = 6, turn_count = 3 WHERE id = 'old'; \
             INSERT INTO responses (id, session_id, sequence, body) VALUES ('{during}', 'old', 6, '{}')",
            body(&during, r#"{"type":"json_object"}"#),
        ))
        .await
        .unwrap();
    let written = store.response(&during).await.unwrap().unwrap();
    assert_eq!(
        (
            written.output_text.as_str(),
            written.usage.total(),
            written.parameters
        ),
        ("It is 42.", 16, parameters)
    );
}
