//! The job client against a real coordinator on a loopback port: the token is sent, refusals
//! keep the coordinator's reason, and a job is listed, cancelled and watched to its end.

use std::time::Duration;

use tessera_client::{ClientError, JobClient};
use tessera_coordinator::scheduler::SchedulerConfig;
use tessera_coordinator::service::{Coordinator, CoordinatorConfig, run};
use tessera_core::job::JobState;

#[tokio::test]
async fn the_job_client_submits_lists_cancels_and_watches() -> Result<(), Box<dyn std::error::Error>>
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let coordinator = Coordinator::start(CoordinatorConfig {
        store_url: "memory://job-client-test".into(),
        token: Some("s3cret".into()),
        scheduler: SchedulerConfig::default(),
        tls: None,
        resume: Default::default(),
        allowed_sources: Vec::new(),
    })
    .await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(run(listener, coordinator.clone(), async move {
        let mut rx = stopped;
        let _ = rx.wait_for(|v| *v).await;
    }));

    let mut wrong = JobClient::connect(&url, Some("guess".into()), None).await?;
    match wrong.list().await {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        }
        other => panic!("a wrong token is refused, got {other:?}"),
    }

    let mut client = JobClient::connect(&url, Some("s3cret".into()), None).await?;
    let err = client
        .submit("version: 1\nsources: [a.tif]\n".into())
        .await
        .expect_err("a spec without an output is refused");
    assert!(
        err.to_string()
            .contains("malformed job spec: missing field `output`"),
        "the coordinator's reason is kept: {err}"
    );

    // A job no worker runs: listed, cancelled, and a watch ends with its final state.
    let job = coordinator.submit_noop(3).await;
    let listed = client.list().await?;
    assert!(listed.iter().any(|j| j.id == job), "{listed:?}");
    let cancelled = client.cancel(&job.to_string()).await?;
    assert_eq!(cancelled.state, JobState::Cancelled);
    let mut seen = 0;
    let last = tokio::time::timeout(
        Duration::from_secs(30),
        client.watch(&job.to_string(), |_| seen += 1),
    )
    .await??;
    assert_eq!(last.state, JobState::Cancelled);
    assert!(seen >= 1);

    let err = JobClient::connect("http://127.0.0.1:1", None, None)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        err.to_string()
            .contains("cannot reach the coordinator at http://127.0.0.1:1"),
        "{err}"
    );

    let _ = stop.send(true);
    server.await??;
    Ok(())
}
