//! The commands that talk to a server over HTTP.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rota::api::*;
use rota::Client;

use crate::cli::{
    ClientArgs, Command, DeadCommand, EnqueueArgs, JobsCommand, ListArgs, QueuesCommand,
    SchedulesCommand,
};
use crate::output::{self, print};

/// The client for `--url` and `--token`.
pub fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(args.url())?.with_token(args.token.clone()))
}

/// Runs a client command.
pub async fn run(command: Command, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let client = client(args)?;
    let json = args.json;
    match command {
        Command::Enqueue { args: e, .. } => {
            let enqueued = client.enqueue_request(&new_job(e)?).await?;
            print(json, &enqueued, |e| {
                format!(
                    "{} {} ({}{})\n",
                    e.job.id,
                    e.job.kind,
                    e.job.state,
                    if e.duplicate {
                        ", duplicate of an unfinished job"
                    } else {
                        ""
                    }
                )
            });
        }
        Command::Jobs {
            command: JobsCommand::List { filter, state },
            ..
        } => {
            let mut query = list_query(&filter);
            query.extend(state.map(|s| ("state", s)));
            let page = client.jobs(&query).await?;
            print(json, &page, |p| output::jobs_table(&p.jobs));
        }
        Command::Jobs {
            command: JobsCommand::Show { id },
            ..
        } => print(json, &client.job(&id).await?, output::job_detail),
        Command::Jobs {
            command: JobsCommand::Cancel { id },
            ..
        } => {
            let job = client.cancel(&id).await?;
            print(json, &job, output::job_detail);
            if job.state == JobState::Running && job.cancel_requested && !json {
                println!("cancel pending: its worker stops it within a second or two, then it is cancelled");
            }
        }
        Command::Jobs {
            command: JobsCommand::Retry { id },
            ..
        } => print(json, &client.retry(&id).await?, output::job_detail),
        Command::Jobs {
            command: JobsCommand::Wait { id, timeout },
            ..
        } => {
            let limit = rota_core::parse_duration(&timeout).context("--timeout")?;
            let started = Instant::now();
            let job = loop {
                let left = limit
                    .saturating_sub(started.elapsed())
                    .min(Duration::from_secs(60));
                let job = client
                    .job_wait(&id, &rota_core::format_duration(left))
                    .await?;
                if job.state.is_final() || started.elapsed() >= limit {
                    break job;
                }
            };
            print(json, &job, output::job_detail);
            // Scripts can tell the outcomes apart (documented in `rota jobs wait --help`).
            match job.state {
                JobState::Completed => {}
                JobState::Dead => {
                    eprintln!("rota: job {id} ended dead");
                    return Ok(ExitCode::from(4));
                }
                JobState::Cancelled => {
                    eprintln!("rota: job {id} was cancelled");
                    return Ok(ExitCode::from(5));
                }
                state => {
                    eprintln!("rota: job {id} is still {state} after {timeout}");
                    return Ok(ExitCode::from(3));
                }
            }
        }
        Command::Dead {
            command:
                DeadCommand::List {
                    filter: _,
                    group: true,
                },
            ..
        } => {
            let groups = client.dead_groups().await?;
            print(json, &groups, |g| {
                output::table(
                    &["group", "count", "kinds", "latest", "message"],
                    g.groups
                        .iter()
                        .map(|g| {
                            vec![
                                g.group.clone(),
                                g.count.to_string(),
                                g.kinds.join(","),
                                g.latest.to_string(),
                                g.message.chars().take(80).collect(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        Command::Dead {
            command:
                DeadCommand::List {
                    filter,
                    group: false,
                },
            ..
        } => {
            let page = client.dead(&list_query(&filter)).await?;
            print(json, &page, |p| output::jobs_table(&p.jobs));
        }
        Command::Dead {
            command:
                DeadCommand::Retry {
                    ids,
                    queue,
                    kind,
                    group,
                },
            ..
        } => {
            let selection = dead_selection("retry", ids, queue, kind, group)?;
            let outcomes = client.retry_dead(&selection).await?;
            print(json, &outcomes, |o| {
                let done = o.results.iter().filter(|r| r.error.is_none()).count();
                let mut text = format!("retried {done} dead job(s)\n");
                for r in o.results.iter().filter(|r| r.error.is_some()) {
                    text.push_str(&format!(
                        "{}: {}\n",
                        r.job,
                        r.error.as_ref().map(|e| e.detail.as_str()).unwrap_or("")
                    ));
                }
                text
            });
        }
        Command::Dead {
            command:
                DeadCommand::Purge {
                    ids,
                    queue,
                    kind,
                    group,
                },
            ..
        } => {
            let selection = dead_selection("purge", ids, queue, kind, group)?;
            let count = client.purge_dead(&selection).await?;
            print(json, &count, |c| {
                format!("purged {} dead job(s)\n", c.count)
            });
        }
        Command::Queues {
            command: QueuesCommand::List,
            ..
        } => print(json, &client.queues().await?, |q| {
            output::queues_table(&q.queues)
        }),
        Command::Queues {
            command:
                QueuesCommand::Declare {
                    name,
                    max_attempts,
                    backoff,
                    lease,
                    timeout,
                    concurrency,
                    completed_retention,
                    cancelled_retention,
                    dead_retention,
                    flow,
                },
            ..
        } => {
            let key_weights = pairs("--key-weight", "KEY=WEIGHT", &flow.key_weights, |w| {
                w.parse::<u32>().map_err(|e| e.to_string())
            })?;
            let kind_rates = pairs("--kind-rate", "KIND=RATE", &flow.kind_rates, |r| {
                Ok(r.to_string())
            })?;
            let queue = client
                .declare_queue(
                    &name,
                    &QueueDeclareRequest {
                        max_attempts,
                        backoff: backoff.as_deref().map(backoff_list).transpose()?,
                        lease,
                        timeout,
                        concurrency,
                        completed_retention,
                        cancelled_retention,
                        dead_retention,
                        key_concurrency: flow.key_concurrency,
                        key_weights,
                        rate: flow.rate,
                        key_rate: flow.key_rate,
                        kind_rates,
                        max_depth: flow.max_depth,
                        max_age: flow.max_age,
                        overflow: flow.overflow,
                    },
                )
                .await?;
            print(json, &queue, |q| {
                output::queues_table(std::slice::from_ref(q))
            });
        }
        Command::Queues {
            command: QueuesCommand::Show { name },
            ..
        } => print(json, &client.queue(&name).await?, output::queue_detail),
        Command::Queues {
            command: QueuesCommand::Pause { name },
            ..
        } => print(json, &client.pause_queue(&name).await?, |q| {
            format!("queue {} paused\n", q.name)
        }),
        Command::Queues {
            command: QueuesCommand::Resume { name },
            ..
        } => print(json, &client.resume_queue(&name).await?, |q| {
            format!("queue {} resumed\n", q.name)
        }),
        Command::Schedules { command, .. } => schedules(&client, json, command).await?,
        Command::Health {
            worker: Some(name), ..
        } => return worker_health(&client, json, &name).await,
        Command::Health { worker: None, .. } => {
            let (ready, report) = client.ready().await?;
            print(json, &report, |r| {
                let mut text = format!("{}\n", if r.ready { "ready" } else { "NOT READY" });
                for c in &r.checks {
                    text.push_str(&format!(
                        "  {} {}: {}\n",
                        if c.ok { "ok  " } else { "FAIL" },
                        c.name,
                        c.detail
                    ));
                }
                text
            });
            return Ok(if ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Workers { .. } => {
            let workers = client.workers().await?;
            print(json, &workers, |w| {
                let leader = match &w.leader {
                    Some(l) => format!("maintenance leader: {}", l.node),
                    None => "maintenance leader: none (no node holds the leadership now)".into(),
                };
                leader
                    + "\n"
                    + &output::table(
                        &[
                            "name",
                            "id",
                            "alive",
                            "host",
                            "pid",
                            "queues",
                            "kinds",
                            "concurrency",
                            "last_seen",
                        ],
                        w.workers
                            .iter()
                            .map(|w| {
                                vec![
                                    w.name.clone(),
                                    w.id.clone(),
                                    if w.alive { "yes" } else { "no" }.into(),
                                    w.host.clone(),
                                    w.pid.to_string(),
                                    w.queues.join(","),
                                    if w.kinds.is_empty() {
                                        "*".into()
                                    } else {
                                        w.kinds.join(",")
                                    },
                                    w.concurrency.to_string(),
                                    w.last_seen.to_string(),
                                ]
                            })
                            .collect(),
                    )
            });
        }
        Command::Serve(_)
        | Command::Worker { .. }
        | Command::Token(_)
        | Command::Migrate(_)
        | Command::Bench { .. }
        | Command::Doctor { .. } => {
            unreachable!("dispatched in main")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rota health --worker NAME`: exit 0 when a worker of that name fetched or heartbeated
/// within its lease, 1 otherwise, with one line saying which.
async fn worker_health(client: &Client, json: bool, name: &str) -> anyhow::Result<ExitCode> {
    let workers = client.workers().await?;
    let mine: Vec<_> = workers.workers.iter().filter(|w| w.name == name).collect();
    let alive = mine.iter().find(|w| w.alive);
    let line = match (alive, mine.first()) {
        (Some(w), _) => format!("worker {name} is alive: {} last seen {}", w.id, w.last_seen),
        (None, Some(w)) => format!(
            "worker {name} is NOT alive: {} last seen {}, longer ago than its lease",
            w.id, w.last_seen
        ),
        (None, None) => format!("worker {name} is NOT alive: the server has never seen it (is it started with --name {name}?)"),
    };
    if json {
        print(
            true,
            &serde_json::json!({"worker": name, "alive": alive.is_some(), "detail": line}),
            |_| String::new(),
        );
    } else {
        println!("{line}");
    }
    Ok(if alive.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The dead jobs a retry or purge means; one of ids, --queue, --kind or --group is required.
fn dead_selection(
    action: &str,
    ids: Vec<String>,
    queue: Option<String>,
    kind: Option<String>,
    group: Option<String>,
) -> anyhow::Result<JobSelection> {
    if ids.is_empty() && queue.is_none() && kind.is_none() && group.is_none() {
        bail!("give job ids, or --queue, --kind and/or --group: `rota dead {action}` never takes every dead job at once");
    }
    Ok(JobSelection {
        ids,
        queues: queue.into_iter().collect(),
        kinds: kind.into_iter().collect(),
        group,
    })
}

fn list_query(filter: &ListArgs) -> Vec<(&'static str, String)> {
    let mut query = vec![("limit", filter.limit.to_string())];
    query.extend(filter.queue.clone().map(|q| ("queue", q)));
    query.extend(filter.kind.clone().map(|k| ("kind", k)));
    query.extend(filter.tag.clone().map(|t| ("tag", t)));
    query.extend(filter.after.clone().map(|a| ("after", a)));
    query
}

/// `--backoff 30s,60s,120s`: explicit intervals.
fn backoff_list(list: &str) -> anyhow::Result<rota_core::Backoff> {
    list.split(',')
        .map(|d| rota_core::parse_duration(d.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map(rota_core::Backoff::Intervals)
        .map_err(|err| anyhow::anyhow!("--backoff: {err}; give delays such as 30s,60s,120s"))
}

fn new_job(e: EnqueueArgs) -> anyhow::Result<NewJobRequest> {
    let args = serde_json::from_str(&e.args).map_err(|err| {
        anyhow::anyhow!(
            "--args: not valid JSON ({err}); quote it, such as --args '{{\"to\": \"ada\"}}'"
        )
    })?;
    let backoff = e.backoff.as_deref().map(backoff_list).transpose()?;
    let run_at =
        e.at.map(|t| {
            t.parse().map_err(|err| {
                anyhow::anyhow!(
                    "--at: {t:?} is not an RFC 3339 time such as 2026-11-23T09:00:00Z ({err})"
                )
            })
        })
        .transpose()?;
    Ok(NewJobRequest {
        queue: e.queue,
        kind: e.kind,
        args,
        priority: e.priority,
        run_at,
        delay: e.delay,
        max_attempts: e.max_attempts,
        backoff,
        timeout: e.timeout,
        unique_key: e.unique,
        unique_for: e.unique_for,
        tags: e.tag,
        concurrency_key: e.concurrency_key,
        debounce: e.debounce.map(|key| rota::api::DebounceRequest {
            key,
            period: e.period.clone().unwrap_or_default(),
            max_wait: e.max_wait.clone().unwrap_or_default(),
        }),
        throttle: e.throttle.map(|key| rota::api::ThrottleRequest {
            key,
            period: e.period.unwrap_or_default(),
        }),
    })
}

/// `NAME=VALUE` flags as a map; the error names the flag and the expected shape.
fn pairs<T>(
    flag: &str,
    shape: &str,
    raw: &[String],
    value: impl Fn(&str) -> Result<T, String>,
) -> anyhow::Result<std::collections::BTreeMap<String, T>> {
    raw.iter()
        .map(|pair| {
            let (name, v) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{flag}: {pair:?} is not {shape}"))?;
            let v = value(v.trim()).map_err(|e| anyhow::anyhow!("{flag}: {pair:?}: {e}"))?;
            Ok((name.trim().to_string(), v))
        })
        .collect()
}

async fn schedules(client: &Client, json: bool, command: SchedulesCommand) -> anyhow::Result<()> {
    match command {
        SchedulesCommand::List => print(json, &client.schedules().await?, |l| {
            output::schedules_table(&l.schedules)
        }),
        SchedulesCommand::Show { name } => print(
            json,
            &client.schedule(&name).await?,
            output::schedule_detail,
        ),
        SchedulesCommand::Create {
            name,
            cron,
            kind,
            queue,
            args,
            timezone,
            misfire,
            backfill,
            max_attempts,
        } => {
            let args = serde_json::from_str(&args)
                .map_err(|err| anyhow::anyhow!("--args: not valid JSON ({err})"))?;
            let request = ScheduleRequest {
                name,
                cron,
                timezone: Some(timezone),
                queue,
                kind,
                args,
                misfire: Some(misfire),
                backfill,
                max_attempts,
                ..Default::default()
            };
            print(
                json,
                &client.create_schedule(&request).await?,
                output::schedule_detail,
            );
        }
        SchedulesCommand::Delete { name } => {
            client.delete_schedule(&name).await?;
            print(json, &serde_json::json!({"deleted": name}), |_| {
                format!("schedule {name} deleted (its jobs stay)\n")
            });
        }
        SchedulesCommand::Pause { name } => print(
            json,
            &client
                .schedule_action::<ScheduleView>(&name, "pause")
                .await?,
            output::schedule_detail,
        ),
        SchedulesCommand::Resume { name } => print(
            json,
            &client
                .schedule_action::<ScheduleView>(&name, "resume")
                .await?,
            output::schedule_detail,
        ),
        SchedulesCommand::Trigger { name } => {
            let enqueued: Enqueued = client.schedule_action(&name, "trigger").await?;
            print(json, &enqueued, |e| {
                format!("{} {} ({})\n", e.job.id, e.job.kind, e.job.state)
            });
        }
    }
    Ok(())
}
