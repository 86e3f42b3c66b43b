//! The client side of Tessera: [`connect`] opens a channel to a coordinator (TLS for
//! `https://`), and [`JobClient`] submits, lists, watches and cancels jobs and reads cubes,
//! adding the bearer token to every call. The `tessera` CLI and the tests use it; the worker
//! uses [`connect`].

use tessera_core::job::JobStatus;
use tessera_proto::pb;
use tessera_proto::pb::job_service_client::JobServiceClient;
use tonic::Request;
use tonic::transport::Channel;

/// Why a client call failed; its message is the coordinator's when it answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {url}: {message}")]
    Connect { url: String, message: String },
    /// The coordinator refused the call (`status.message()` says why).
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// The coordinator's answer could not be decoded.
    #[error("bad answer from the coordinator: {0}")]
    Decode(String),
}

/// A channel to `url`; `https://` URLs use TLS and trust `ca_pem`.
pub async fn connect(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, ClientError> {
    let failed = |message: String| ClientError::Connect {
        url: url.to_string(),
        message,
    };
    let mut endpoint = Channel::from_shared(url.to_string()).map_err(|e| failed(e.to_string()))?;
    if url.starts_with("https://") {
        let ca = ca_pem.ok_or_else(|| {
            failed("an https:// coordinator needs a CA certificate (--tls-ca)".into())
        })?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| failed(e.to_string()))?;
    }
    endpoint.connect().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        failed(msg)
    })
}

/// A catalog record from its protocol message.
fn dataset_of(d: &pb::Dataset) -> Result<tessera_core::catalog::Dataset, ClientError> {
    serde_json::from_slice(&d.record_json)
        .map_err(|e| ClientError::Decode(format!("dataset {}: {e}", d.id)))
}

/// A job-service client that adds the bearer token to every call.
#[derive(Debug, Clone)]
pub struct JobClient {
    inner: JobServiceClient<Channel>,
    token: Option<String>,
}

impl JobClient {
    /// Connects to the coordinator at `url`; `ca_pem` is the CA to trust for `https://`.
    pub async fn connect(
        url: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<JobClient, ClientError> {
        let channel = connect(url, ca_pem).await?;
        Ok(JobClient {
            inner: JobServiceClient::new(channel),
            token,
        })
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        tessera_proto::authorized(msg, self.token.as_deref())
    }

    /// Submits a job spec (YAML); returns the job's id.
    pub async fn submit(&mut self, yaml: String) -> Result<String, ClientError> {
        let r = self.req(pb::SubmitJobRequest { spec_yaml: yaml });
        Ok(self.inner.submit_job(r).await?.into_inner().job_id)
    }

    /// A region of a cube product, read through the coordinator.
    pub async fn read_cube(
        &mut self,
        request: pb::ReadCubeRequest,
    ) -> Result<tessera_core::cube::Subset, ClientError> {
        let r = self.req(request);
        let response = self
            .inner
            .clone()
            .max_decoding_message_size(1 << 30)
            .read_cube(r)
            .await?;
        tessera_proto::from_proto::subset(response.into_inner())
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A page of the coordinator's catalog search: the records and the next page's token
    /// (empty on the last page).
    pub async fn search_datasets(
        &mut self,
        request: pb::SearchDatasetsRequest,
    ) -> Result<(Vec<tessera_core::catalog::Dataset>, String), ClientError> {
        let r = self.req(request);
        let page = self.inner.search_datasets(r).await?.into_inner();
        let records = page
            .datasets
            .iter()
            .map(dataset_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, page.next_page_token))
    }

    /// One record of the coordinator's catalog, by id or name.
    pub async fn get_dataset(
        &mut self,
        dataset: &str,
    ) -> Result<tessera_core::catalog::Dataset, ClientError> {
        let r = self.req(pb::GetDatasetRequest {
            dataset: dataset.to_string(),
        });
        dataset_of(&self.inner.get_dataset(r).await?.into_inner())
    }

    /// Sets and removes user attributes of a record; returns the record after.
    pub async fn update_dataset_attributes(
        &mut self,
        request: pb::UpdateDatasetAttributesRequest,
    ) -> Result<tessera_core::catalog::Dataset, ClientError> {
        let r = self.req(request);
        dataset_of(&self.inner.update_dataset_attributes(r).await?.into_inner())
    }

    /// Adds a schedule: `spec_yaml` submitted by the coordinator on `cron` in `timezone`.
    pub async fn add_schedule(
        &mut self,
        request: pb::AddScheduleRequest,
    ) -> Result<pb::Schedule, ClientError> {
        let r = self.req(request);
        Ok(self.inner.add_schedule(r).await?.into_inner())
    }

    /// Every schedule of the coordinator, with its runs.
    pub async fn list_schedules(&mut self) -> Result<Vec<pb::Schedule>, ClientError> {
        let r = self.req(pb::ListSchedulesRequest {});
        Ok(self.inner.list_schedules(r).await?.into_inner().schedules)
    }

    /// Removes a schedule; returns it as it was.
    pub async fn remove_schedule(&mut self, name: &str) -> Result<pb::Schedule, ClientError> {
        let r = self.req(pb::ScheduleRef {
            name: name.to_string(),
        });
        Ok(self.inner.remove_schedule(r).await?.into_inner())
    }

    /// Fires a schedule now; returns it with the run that made.
    pub async fn run_schedule_now(&mut self, name: &str) -> Result<pb::Schedule, ClientError> {
        let r = self.req(pb::ScheduleRef {
            name: name.to_string(),
        });
        Ok(self.inner.run_schedule_now(r).await?.into_inner())
    }

    /// Every job the coordinator knows.
    pub async fn list(&mut self) -> Result<Vec<JobStatus>, ClientError> {
        let r = self.req(pb::ListJobsRequest {});
        let jobs = self.inner.list_jobs(r).await?.into_inner().jobs;
        jobs.into_iter()
            .map(|j| JobStatus::try_from(j).map_err(|e| ClientError::Decode(e.to_string())))
            .collect()
    }

    /// Cancels a job; returns its status after.
    pub async fn cancel(&mut self, id: &str) -> Result<JobStatus, ClientError> {
        let r = self.req(pb::JobRef {
            job_id: id.to_string(),
        });
        let s = self.inner.cancel_job(r).await?.into_inner();
        JobStatus::try_from(s).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Follows a job to its end, calling `each` with every status the coordinator sends;
    /// returns the last. A coordinator that goes away mid-watch (restarting) is waited for,
    /// up to [`WATCH_PATIENCE`] without contact, and the watch goes on where it was.
    pub async fn watch(
        &mut self,
        id: &str,
        mut each: impl FnMut(&JobStatus),
    ) -> Result<JobStatus, ClientError> {
        let mut last: Option<JobStatus> = None;
        let mut retry = Retry::new(Some(WATCH_PATIENCE));
        loop {
            let r = self.req(pb::JobRef {
                job_id: id.to_string(),
            });
            let followed = async {
                let mut stream = self.inner.watch_job(r).await?.into_inner();
                while let Some(msg) = stream.message().await? {
                    let s =
                        JobStatus::try_from(msg).map_err(|e| ClientError::Decode(e.to_string()))?;
                    retry.contact();
                    each(&s);
                    last = Some(s);
                }
                Ok::<_, ClientError>(())
            }
            .await;
            match followed {
                Ok(()) => {
                    return last.ok_or_else(|| {
                        ClientError::Decode("the coordinator sent no status".into())
                    });
                }
                Err(ClientError::Status(s)) if unreachable(&s) => match retry.next_wait() {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(ClientError::Status(s)),
                },
                Err(e) => return Err(e),
            }
        }
    }
}

/// How long a watch waits for a coordinator it lost (restarting) before it gives up.
pub const WATCH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether a call failed because the coordinator could not be reached (down, restarting, the
/// connection dropped mid-call) rather than because it answered no.
pub fn unreachable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// The longest wait between two tries of an unreachable coordinator.
pub const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Tries of an unreachable coordinator: waits growing from 200 ms to [`MAX_RETRY_WAIT`], for
/// `patience` since the last contact (forever when `None`).
#[derive(Debug, Clone)]
pub struct Retry {
    patience: Option<std::time::Duration>,
    since: std::time::Instant,
    wait: std::time::Duration,
}

impl Retry {
    pub fn new(patience: Option<std::time::Duration>) -> Retry {
        Retry {
            patience,
            since: std::time::Instant::now(),
            wait: std::time::Duration::from_millis(200),
        }
    }

    /// The coordinator answered.
    pub fn contact(&mut self) {
        self.since = std::time::Instant::now();
        self.wait = std::time::Duration::from_millis(200);
    }

    /// The wait before the next try, or `None` when patience has run out.
    pub fn next_wait(&mut self) -> Option<std::time::Duration> {
        if self.patience.is_some_and(|p| self.since.elapsed() >= p) {
            return None;
        }
        let wait = self.wait;
        self.wait = (self.wait * 2).min(MAX_RETRY_WAIT);
        Some(wait)
    }
}
