//! `campusbite-loadgen`: open SSE streams, publish at a fixed offered
//! rate, measure delivery, loss, duplicates, latency and the server's cost.
//!
//! Raw HTTP/1.1 over tokio TCP (no HTTP client crate), so the generator's own
//! cost per stream and per event stays small and known. One JSON line on
//! stdout per run; progress on stderr.
//!
//! Users are `lg-<run>-<n>` for `n` in `0..run_users`; notification `seq`
//! goes to one user, each once per `run_users` notifications, in an order
//! that spreads consecutive ones over the subscriber processes
//! ([`order::UserOrder`]), or to every user (`--batch`).
//! Several processes can share a run (`--run-id`, `--role`, `--user-offset`,
//! `--users`, `--run-users`): each subscriber process knows from these
//! alone what it must receive.

pub mod nats_access;
pub mod net;
pub mod order;
pub mod publish;
pub mod stats;
pub mod sub;
pub mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use self::net::Target;
use self::order::UserOrder;
use self::publish::{PublishPlan, PublishStats, Via};
use self::stats::{latency_summary, round, Samples};
use self::sub::{Plan, Shared, StreamSpec};
use campusbite_notify::cli::token::{mint, TokenArgs};

/// Which server is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// This gateway: JWT per stream, `/api/notifications/…`.
    Campusbite,
    /// nginx + nchan: `GET /sub/<user>`, `POST /pub/<user>`, no tokens.
    Nchan,
}

/// What this process does in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Subscribe,
    Publish,
    Both,
}

/// Arguments of `loadgen`.
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Server base URL; repeat for several nodes (a user's tabs are spread
    /// over them round-robin).
    #[arg(long = "target", default_value = "http://127.0.0.1:8080")]
    pub targets: Vec<String>,
    /// Where streams reconnect (`--reconnect`); default: the targets.
    #[arg(long = "resume-target")]
    pub resume_targets: Vec<String>,
    /// Where HTTP publishes go; default: the first target.
    #[arg(long)]
    pub publish_target: Option<String>,
    /// Server kind: URLs, tokens and publish format.
    #[arg(long, value_enum, default_value = "campusbite")]
    pub flavor: Flavor,
    /// Subscribe, publish or both in this process.
    #[arg(long, value_enum, default_value = "both")]
    pub role: Role,
    /// Run id shared by the processes of one run (user ids `lg-<run>-<n>`).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Users this process subscribes.
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// First user index of this process.
    #[arg(long, default_value_t = 0)]
    pub user_offset: u64,
    /// Users of the whole run (publishers spread over them); default
    /// `user-offset + users`.
    #[arg(long)]
    pub run_users: Option<u64>,
    /// Streams per user.
    #[arg(long, default_value_t = 1)]
    pub tabs: u64,
    /// HS256 secret to mint tokens with.
    #[arg(long, env = "NOTIFY_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// `iss` claim, if the server requires one.
    #[arg(long, env = "NOTIFY_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim, if the server requires one.
    #[arg(long, env = "NOTIFY_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Token lifetime.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// New streams per second (0 = as fast as `--connect-concurrency` allows).
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Give up opening streams after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Local source addresses, round-robin per stream: `127.0.0.2-127.0.0.20`
    /// ranges or comma lists; repeatable.
    #[arg(long = "source-ips")]
    pub source_ips: Vec<String>,
    /// Offered rate: notifications (or batches with `--batch`) per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Notifications (or batches) to publish; default `rate × duration`, or 0.
    #[arg(long)]
    pub count: Option<u64>,
    /// Publish for this long (`count = rate × duration`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Each publish goes to every user of the run at once.
    #[arg(long)]
    pub batch: bool,
    /// Users per HTTP batch request.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Publish connections (HTTP) or acks in flight (JetStream).
    #[arg(long, default_value_t = 16)]
    pub pub_conns: usize,
    /// Publish over NATS (comma-separated servers): JetStream with Nats-Msg-Id.
    #[arg(long)]
    pub publish_nats: Option<String>,
    /// With `--publish-nats`: core publish, no acks.
    #[arg(long)]
    pub nats_core: bool,
    /// With `--publish-nats`: the NATS credentials (a producer user).
    #[command(flatten)]
    pub nats_access: nats_access::NatsAccess,
    /// NATS subject prefix.
    #[arg(
        long,
        env = "NOTIFY_SUBJECT_PREFIX",
        default_value = "campusbite.notify"
    )]
    pub subject_prefix: String,
    /// Keep the streams idle this long before publishing.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Reconnect ended streams with Last-Event-ID, as a browser does.
    #[arg(long)]
    pub reconnect: bool,
    /// Reconnect delay instead of the server's `retry:`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub reconnect_delay: Option<Duration>,
    /// Churn: each stream closes itself after this long and reopens at once
    /// on the same node with Last-Event-ID (the first time after a random
    /// part of it, so closes are spread evenly): N streams churn at
    /// N / lifetime closes and opens per second.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stream_lifetime: Option<Duration>,
    /// With `--reconnect`: also wait until this many streams have resumed.
    #[arg(long, default_value_t = 0)]
    pub expect_resumed: u64,
    /// Stop waiting for deliveries after this long without progress.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Subscriber role: wait this long for the first notification.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
    /// Server process to watch (CPU time, RSS); repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Written (with the open stream count) once the streams are open and held.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Publisher role: wait for these files before publishing.
    #[arg(long = "wait-file")]
    pub wait_files: Vec<PathBuf>,
    /// A label copied into the JSON line.
    #[arg(long)]
    pub label: Option<String>,
    /// Runtime worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// The user id of run-wide user `n`.
pub fn user_id(run: &str, n: u64) -> String {
    format!("lg-{run}-{n}")
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs the load generator and prints its JSON line.
pub fn run(args: LoadgenArgs) -> ExitCode {
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(report) => {
            println!("{report}");
            let bad = ["lost", "duplicated", "misrouted"]
                .iter()
                .any(|k| report["delivery"][k].as_u64().unwrap_or(0) > 0);
            if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn secs(d: Duration) -> f64 {
    round(d.as_secs_f64(), 3)
}

async fn run_async(args: LoadgenArgs) -> Result<Value, String> {
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:06x}", fastrand::u32(..0x100_0000)));
    let run_users = args.run_users.unwrap_or(args.user_offset + args.users);
    if run_users == 0 {
        return Err("no users".into());
    }
    let count = args.count.unwrap_or_else(|| {
        args.duration
            .map_or(0, |d| (d.as_secs_f64() * args.rate).round() as u64)
    });
    let targets = args
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let resume_targets = if args.resume_targets.is_empty() {
        targets.clone()
    } else {
        args.resume_targets
            .iter()
            .map(|t| Target::parse(t))
            .collect::<Result<Vec<_>, _>>()?
    };
    let sources = net::parse_source_ips(&args.source_ips)?;
    let subscribing = args.role != Role::Publish;
    let publishing = args.role != Role::Subscribe && count > 0;
    let t0 = Instant::now();
    let plan = Arc::new(Plan {
        flavor: args.flavor,
        run_users,
        order: UserOrder::new(run_users),
        batch: args.batch,
        targets: targets.clone(),
        resume_targets,
        reconnect: args.reconnect,
        reconnect_delay: args.reconnect_delay,
        stream_lifetime: args.stream_lifetime.filter(|d| !d.is_zero()),
        t0,
    });
    let shared = Arc::new(Shared::new());
    let self_before = stats::sample("self");
    let machine_before = stats::machine_busy_us();
    let before = Samples::take(&args.server_pids);

    // 1. Streams.
    let mut tasks = Vec::new();
    let planned = if subscribing {
        args.users * args.tabs
    } else {
        0
    };
    let mut connect_elapsed = Duration::ZERO;
    let mut connect_cpu_us = None;
    if subscribing {
        let specs = stream_specs(&args, &run_id, &targets, &sources)?;
        eprintln!(
            "loadgen {run_id}: opening {} streams on {} target(s)",
            specs.len(),
            targets.len()
        );
        let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
        let connect_start = Instant::now();
        let spawner = {
            let plan = plan.clone();
            let shared = shared.clone();
            let rate = args.connect_rate;
            tokio::spawn(async move {
                let mut handles = Vec::with_capacity(specs.len());
                for (i, spec) in specs.into_iter().enumerate() {
                    if rate > 0.0 {
                        let due = connect_start + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let permit = gate.clone().acquire_owned().await.ok();
                    handles.push(tokio::spawn(sub::run_stream(
                        spec,
                        plan.clone(),
                        shared.clone(),
                        permit,
                    )));
                }
                handles
            })
        };
        let deadline = connect_start + args.connect_timeout;
        loop {
            let done = shared.opened.load(Relaxed) + shared.failed.load(Relaxed);
            if done >= planned || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tasks = spawner.await.map_err(|e| e.to_string())?;
        let last = Duration::from_nanos(shared.last_open_ns.load(Relaxed));
        connect_elapsed = (t0 + last).saturating_duration_since(connect_start);
        let after_connect = Samples::take(&args.server_pids);
        connect_cpu_us = after_connect
            .cpu_us()
            .zip(before.cpu_us())
            .map(|(a, b)| a - b);
        eprintln!(
            "loadgen {run_id}: {} open, {} failed in {:.2}s",
            shared.opened.load(Relaxed),
            shared.failed.load(Relaxed),
            connect_elapsed.as_secs_f64()
        );
    }
    if !args.hold.is_zero() {
        eprintln!("loadgen {run_id}: holding {:?}", args.hold);
        tokio::time::sleep(args.hold).await;
    }
    let held = Samples::take(&args.server_pids);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", shared.opened.load(Relaxed)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }

    // 2. Publishing.
    for file in &args.wait_files {
        while !file.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let publish_started = Instant::now();
    let delivered_before = shared.delivered.load(Relaxed);
    let pub_stats: Option<Arc<PublishStats>> = if publishing {
        let via = publish_via(&args)?;
        let publish_plan = PublishPlan {
            flavor: args.flavor,
            via,
            run_id: run_id.clone(),
            run_users,
            count,
            rate: args.rate,
            batch: args.batch,
            batch_size: args.batch_size,
            conns: args.pub_conns,
        };
        eprintln!(
            "loadgen {run_id}: publishing {count} at {}/s{}",
            args.rate,
            if args.batch { " (batches)" } else { "" }
        );
        Some(publish::run(publish_plan).await?)
    } else {
        None
    };

    // 3. Waiting for deliveries (and resumes).
    let expected_all = expected_all(&args, &plan.order, run_users, count);
    if subscribing && (count > 0 || args.expect_resumed > 0) {
        let wait_start = Instant::now();
        let mut last_seen = (u64::MAX, u64::MAX);
        let mut last_change = Instant::now();
        loop {
            let delivered = shared.delivered.load(Relaxed);
            let resumed = shared.resumed.load(Relaxed);
            let complete = delivered >= expected_total(&args, expected_all, &shared)
                && resumed >= args.expect_resumed
                && (!args.reconnect
                    || shared.up.load(Relaxed) as u64 >= shared.opened.load(Relaxed));
            if complete {
                break;
            }
            if (delivered, resumed) != last_seen {
                last_seen = (delivered, resumed);
                last_change = Instant::now();
            }
            let started = delivered > delivered_before || publishing || resumed > 0;
            let patience = if started {
                args.settle
            } else {
                args.start_timeout
            };
            if last_change.elapsed() > patience && wait_start.elapsed() > patience.min(args.settle)
            {
                eprintln!("loadgen {run_id}: no progress for {patience:?}; stopping");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let finished = Samples::take(&args.server_pids);
    let self_after = stats::sample("self");
    let machine_after = stats::machine_busy_us();
    for t in &tasks {
        t.abort();
    }
    let elapsed = publish_started.elapsed();

    // 4. The report.
    let expected_total = if subscribing {
        expected_total(&args, expected_all, &shared)
    } else {
        0
    };
    let delivered = shared.delivered.load(Relaxed);
    let opened = shared.opened.load(Relaxed);
    let mut latencies = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
    let mut connect_us = std::mem::take(&mut *shared.connect_us.lock().unwrap());
    let mut churn_reopen_us = std::mem::take(&mut *shared.churn_reopen_us.lock().unwrap());
    let delivered_in_window = delivered - delivered_before;
    let first_disconnect = shared.first_disconnect_ns.load(Relaxed);
    let last_resume = shared.last_resume_ns.load(Relaxed);
    let recovery_ms = (first_disconnect != u64::MAX && last_resume > first_disconnect)
        .then(|| round((last_resume - first_disconnect) as f64 / 1e6, 1));

    let server = server_report(
        &args.server_pids,
        &before,
        &held,
        &finished,
        opened,
        delivered_in_window,
        connect_cpu_us,
    );
    let publish = pub_stats.map(|p| {
        let mut rtt = std::mem::take(&mut *p.rtt_us.lock().unwrap());
        let took = *p.elapsed.lock().unwrap();
        let published = p.published.load(Relaxed);
        json!({
            "via": match (&args.publish_nats, args.nats_core) {
                (None, _) => "http",
                (Some(_), false) => "nats-jetstream",
                (Some(_), true) => "nats-core",
            },
            "offered_rate": args.rate,
            "count": count,
            "published": published,
            "acked": p.acked.load(Relaxed),
            "failed": p.failed.load(Relaxed),
            "requests": p.requests.load(Relaxed),
            "seconds": secs(took),
            "achieved_rate": round(p.requests.load(Relaxed) as f64 / took.as_secs_f64().max(1e-9), 1),
            "max_behind_ms": round(p.max_behind_us.load(Relaxed) as f64 / 1000.0, 1),
            "rtt_ms": latency_summary(&mut rtt),
            "fail_reasons": *p.fail_reasons.lock().unwrap(),
        })
    });
    let wall = t0.elapsed().as_secs_f64();
    let loadgen_cpu_us = self_before
        .zip(self_after)
        .map(|(b, a)| a.cpu_us - b.cpu_us);
    let loadgen_cpu = self_before.zip(self_after).map(|(b, a)| {
        json!({
            "cpu_ms": (a.cpu_us - b.cpu_us) / 1000,
            "cpu_pct_of_run": round((a.cpu_us - b.cpu_us) as f64 / 1e4 / wall, 1),
            "rss_mb": round(a.rss as f64 / 1048576.0, 1),
        })
    });
    // What everything else on the machine used meanwhile (other engineers'
    // builds): busy CPU of all cores minus the server(s) and this process,
    // in % of one core over the run.
    let others_cpu_pct = machine_before.zip(machine_after).map(|(b, a)| {
        let servers = finished
            .cpu_us()
            .zip(before.cpu_us())
            .map_or(0, |(f, b)| f - b);
        let own = loadgen_cpu_us.unwrap_or(0);
        let others = (a - b).saturating_sub(servers + own);
        round(others as f64 / 1e4 / wall, 1)
    });
    Ok(json!({
        "label": args.label,
        "run": run_id,
        "flavor": args.flavor,
        "role": args.role,
        "targets": args.targets,
        "streams": {
            "planned": planned,
            "opened": opened,
            "failed": shared.failed.load(Relaxed),
            "ended_early": shared.ended.load(Relaxed),
            "fail_reasons": *shared.fail_reasons.lock().unwrap(),
        },
        "connect": {
            "seconds": secs(connect_elapsed),
            "per_s": (opened > 0 && !connect_elapsed.is_zero())
                .then(|| round(opened as f64 / connect_elapsed.as_secs_f64(), 1)),
            "rate_limit": args.connect_rate,
            "latency_ms": latency_summary(&mut connect_us),
        },
        "publish": publish,
        "delivery": {
            "expected": expected_total,
            "delivered": delivered,
            "lost": expected_total.saturating_sub(delivered),
            "duplicated": shared.duplicated.load(Relaxed),
            "out_of_order": shared.out_of_order.load(Relaxed),
            "misrouted": shared.misrouted.load(Relaxed),
            "resets": shared.resets.load(Relaxed),
            "other_events": shared.other_events.load(Relaxed),
            "seconds": secs(elapsed),
            "latency_ms": latency_summary(&mut latencies),
        },
        "churn": plan.stream_lifetime.map(|lifetime| json!({
            "stream_lifetime_s": secs(lifetime),
            "closed": shared.churn_closed.load(Relaxed),
            "reopened": shared.churn_reopened.load(Relaxed),
            "closed_per_s": round(shared.churn_closed.load(Relaxed) as f64 / wall, 1),
            "reopen_latency_ms": latency_summary(&mut churn_reopen_us),
        })),
        "reconnect": args.reconnect.then(|| json!({
            "disconnects": shared.disconnects.load(Relaxed),
            "resumed": shared.resumed.load(Relaxed),
            "up_at_end": shared.up.load(Relaxed),
            "recovery_ms": recovery_ms,
        })),
        "server": server,
        "loadgen": loadgen_cpu,
        "machine": {
            "seconds": round(wall, 2),
            "others_cpu_pct": others_cpu_pct,
        },
    }))
}

/// What every stream of this process must receive, in all, if every one
/// opens. Fixed for the run, so computed once: it visits every user.
fn expected_all(args: &LoadgenArgs, order: &UserOrder, run_users: u64, count: u64) -> u64 {
    let users = args.user_offset..args.user_offset + args.users;
    let per_stream: u64 = if args.batch {
        count * args.users
    } else {
        users
            .map(|u| count / run_users + u64::from(order.position(u) < count % run_users))
            .sum()
    };
    per_stream * args.tabs
}

/// What the opened streams must receive in all (`all`: [`expected_all`]).
/// Streams that failed to open are reported as failed, not as loss.
fn expected_total(args: &LoadgenArgs, all: u64, shared: &Shared) -> u64 {
    let planned = args.users * args.tabs;
    let opened = shared.opened.load(Relaxed);
    if opened >= planned || planned == 0 {
        all
    } else {
        // Approximation when some streams failed: scale by the opened share.
        all * opened / planned
    }
}

fn stream_specs(
    args: &LoadgenArgs,
    run_id: &str,
    targets: &[Target],
    sources: &[std::net::Ipv4Addr],
) -> Result<Vec<StreamSpec>, String> {
    let mut specs = Vec::with_capacity((args.users * args.tabs) as usize);
    for u in args.user_offset..args.user_offset + args.users {
        let user = user_id(run_id, u);
        let token = match args.flavor {
            Flavor::Campusbite => Some(mint(&TokenArgs {
                user: Some(user.clone()),
                publisher: false,
                ttl: args.token_ttl,
                secret: args
                    .secret
                    .clone()
                    .ok_or("set NOTIFY_JWT_SECRET or --secret")?,
                issuer: args.issuer.clone(),
                audience: args.audience.clone(),
            })?),
            Flavor::Nchan => None,
        };
        for tab in 0..args.tabs {
            let index = specs.len();
            let global = (u * args.tabs + tab) as usize;
            specs.push(StreamSpec {
                index,
                user_index: u,
                user: user.clone(),
                token: token.clone(),
                target: global % targets.len(),
                source: (!sources.is_empty()).then(|| sources[index % sources.len()]),
            });
        }
    }
    Ok(specs)
}

fn publish_via(args: &LoadgenArgs) -> Result<Via, String> {
    if let Some(urls) = &args.publish_nats {
        let prefix = args.subject_prefix.clone();
        return Ok(if args.nats_core {
            Via::NatsCore {
                urls: urls.clone(),
                prefix,
                access: args.nats_access.clone(),
            }
        } else {
            Via::NatsJetStream {
                urls: urls.clone(),
                prefix,
                access: args.nats_access.clone(),
            }
        });
    }
    let target = Target::parse(
        args.publish_target
            .as_deref()
            .unwrap_or(args.targets.first().map_or("", String::as_str)),
    )?;
    let token = match args.flavor {
        Flavor::Campusbite => mint(&TokenArgs {
            user: None,
            publisher: true,
            ttl: args.token_ttl,
            secret: args
                .secret
                .clone()
                .ok_or("set NOTIFY_JWT_SECRET or --secret")?,
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
        })?,
        Flavor::Nchan => String::new(),
    };
    Ok(Via::Http { target, token })
}

fn server_report(
    pids: &[u32],
    before: &Samples,
    held: &Samples,
    finished: &Samples,
    opened: u64,
    delivered: u64,
    connect_cpu_us: Option<u64>,
) -> Value {
    if pids.is_empty() {
        return Value::Null;
    }
    let per_pid: Vec<Value> = pids
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            let (b, h, f) = (before.0[i], held.0[i], finished.0[i]);
            json!({
                "pid": pid,
                "rss_before": b.map(|s| s.rss),
                "rss_held": h.map(|s| s.rss),
                "rss_after": f.map(|s| s.rss),
                "cpu_us_publish": h.zip(f).map(|(h, f)| f.cpu_us - h.cpu_us),
            })
        })
        .collect();
    let rss_delta = held
        .rss()
        .zip(before.rss())
        .map(|(h, b)| h as i64 - b as i64);
    let cpu_publish = finished.cpu_us().zip(held.cpu_us()).map(|(f, h)| f - h);
    json!({
        "pids": per_pid,
        "rss_before": before.rss(),
        "rss_held": held.rss(),
        "rss_after": finished.rss(),
        "rss_bytes_per_stream": rss_delta
            .filter(|_| opened > 0)
            .map(|d| round(d as f64 / opened as f64, 0)),
        "cpu_us_connect": connect_cpu_us,
        "cpu_us_per_connect": connect_cpu_us
            .filter(|_| opened > 0)
            .map(|c| round(c as f64 / opened as f64, 1)),
        "cpu_us_publish": cpu_publish,
        "cpu_us_per_delivery": cpu_publish
            .filter(|_| delivered > 0)
            .map(|c| round(c as f64 / delivered as f64, 2)),
    })
}
