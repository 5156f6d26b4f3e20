//! Argument parsing and output of the `handheld` command.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use handheld_proto::client::{Client, ClientError, new_op_id};
use handheld_proto::discovery::{MdnsInterfaces, discover};
use handheld_proto::{
    AnomalyQuery, CylinderDetail, EventView, FillCheckResponse, Operation, OperationRequest, Reason, State,
};
use serde::{Deserialize, Serialize};

/// Exit code of a fill (or fill check) refused by the safety rules.
const EXIT_REFUSED: i32 = 3;

/// Prints a line to stdout. A reader that went away (`handheld show … | head`) ends the
/// command quietly where `println!` would panic; any other failure to write is one line
/// on stderr and exit 1.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("错误 / error: writing the output: {e}");
            std::process::exit(1);
        }
    }};
}

#[derive(Debug, Parser)]
#[command(name = "handheld", about = "气瓶充装追溯 手持终端 / cylinder traceability handheld")]
struct Cli {
    /// Node URL, e.g. http://192.168.1.10:8080 (default: the one saved by `login`).
    #[arg(long, global = true, env = "HANDHELD_NODE")]
    node: Option<String>,
    /// Print the node's JSON instead of Chinese text.
    #[arg(long, global = true)]
    json: bool,
    /// Where the session (node URL and token) is kept.
    #[arg(long, global = true, env = "HANDHELD_SESSION")]
    session: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find nodes on the LAN over mDNS (发现节点).
    Discover {
        /// Interfaces: all, or a comma-separated list such as `lo`.
        #[arg(long, default_value = "all")]
        mdns: MdnsInterfaces,
        /// How long to listen, in seconds.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
    /// Log in and keep the token (登录).
    Login {
        account: String,
        #[arg(long, env = "HANDHELD_PASSWORD")]
        password: String,
        /// Discover the node over mDNS on these interfaces when --node is not given.
        #[arg(long)]
        mdns: Option<MdnsInterfaces>,
    },
    /// Show a cylinder: archive, state and recent events (气瓶查询).
    Show { code: String },
    /// List anomalies found after merges, with their proving events (异常).
    Anomalies {
        /// fill_after_scrap, fill_during_hold, refused_fill, two_places, tag_on_two_cylinders.
        #[arg(long)]
        kind: Option<String>,
        /// Only this cylinder (10 or 16 digits).
        #[arg(long)]
        cylinder: Option<String>,
        /// On a regulator's laptop: another enterprise of its region (default: its own).
        #[arg(long)]
        enterprise: Option<String>,
    },
    /// Ask whether a fill is allowed (充装前校验).
    Check {
        code: String,
        #[arg(long)]
        medium: Option<String>,
        /// Mass about to be filled, kg.
        #[arg(long)]
        mass: Option<f64>,
    },
    /// Bind a tag to a cylinder record (标签绑定).
    BindTag {
        code: String,
        tag: String,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Receive an empty into the empty store (入空瓶库).
    ReceiveEmpty {
        code: String,
        #[arg(long)]
        warehouse: String,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Pre-fill check (充装前检查); give --fail ITEM for each failed item.
    PreFillCheck {
        code: String,
        #[arg(long = "fail")]
        failed: Vec<String>,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Fill (充装).
    Fill {
        code: String,
        #[arg(long)]
        medium: String,
        /// Filled mass, kg.
        #[arg(long)]
        mass: f64,
        #[arg(long)]
        batch: Option<String>,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Post-fill check (充装后检查).
    PostFillCheck {
        code: String,
        #[arg(long = "fail")]
        failed: Vec<String>,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Into the full store (入满瓶库).
    StoreFull {
        code: String,
        #[arg(long)]
        warehouse: String,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Out for delivery (出库配送).
    Dispatch {
        code: String,
        #[arg(long)]
        order: Option<String>,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Hand over to a customer (已配送), optionally recording a new customer's details.
    Deliver {
        code: String,
        #[arg(long)]
        customer: String,
        #[arg(long)]
        order: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        phone: Option<String>,
        #[arg(long)]
        address: Option<String>,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Collect back from a customer (回收).
    Return {
        code: String,
        #[arg(long)]
        customer: String,
        #[arg(long)]
        slip: Option<String>,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Record a repair (维修).
    Repair {
        code: String,
        #[arg(long)]
        description: String,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Send to periodic inspection (送检).
    SendToInspection {
        code: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Record a periodic inspection result (检验结果).
    InspectionResult {
        code: String,
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        report: String,
        /// YYYY-MM-DD
        #[arg(long)]
        date: String,
        /// YYYY-MM-DD; from the rule table when absent.
        #[arg(long)]
        next_due: Option<String>,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Scrap a cylinder (报废).
    Scrap {
        code: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        op: OpArgs,
    },
    /// A regulator finding (监管标记): --hold or --release.
    Finding {
        code: String,
        #[arg(long, conflicts_with = "release")]
        hold: bool,
        #[arg(long)]
        release: bool,
        #[arg(long)]
        finding: String,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        op: OpArgs,
    },
    /// Declare an event wrong (更正).
    Correct {
        code: String,
        #[arg(long)]
        target: String,
        /// did_not_occur or incorrect_data
        #[arg(long, default_value = "incorrect_data")]
        reason: String,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        op: OpArgs,
    },
}

#[derive(Debug, Args)]
struct OpArgs {
    /// Operation id; reuse it to retry safely (default: a new UUIDv7).
    #[arg(long)]
    op_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Session {
    node: String,
    token: String,
    account: String,
}

fn session_path(cli: &Cli) -> PathBuf {
    cli.session.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".handheld-session.json")
    })
}

fn load_session(cli: &Cli) -> Option<Session> {
    let text = std::fs::read_to_string(session_path(cli)).ok()?;
    serde_json::from_str(&text).ok()
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    let session = load_session(cli);
    let node = cli
        .node
        .clone()
        .or_else(|| session.as_ref().map(|s| s.node.clone()))
        .context("no node: pass --node URL or run `handheld login` first")?;
    let mut c = Client::new(&node);
    if let Some(s) = session.filter(|s| s.node.trim_end_matches('/') == node.trim_end_matches('/')) {
        c = c.with_token(&s.token);
    }
    Ok(c)
}

pub(crate) fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Discover { mdns, timeout } => {
            let found = discover(mdns, Duration::from_secs_f64(*timeout)).map_err(anyhow::Error::msg)?;
            if cli.json {
                let v: Vec<_> = found
                    .iter()
                    .map(|n| serde_json::json!({"instance": n.instance, "url": n.url, "station": n.station, "enterprise": n.enterprise, "api": n.api_version}))
                    .collect();
                out!("{}", serde_json::to_string_pretty(&v)?);
            } else if found.is_empty() {
                out!("未发现节点 / no node found");
            } else {
                for n in &found {
                    out!("{}  站点 {}  企业 {}  API v{}", n.url, n.station, n.enterprise, n.api_version);
                }
            }
            Ok(if found.is_empty() { 1 } else { 0 })
        }
        Command::Login { account, password, mdns } => {
            let node = match (&cli.node, mdns) {
                (Some(n), _) => n.clone(),
                (None, Some(m)) => discover(m, Duration::from_secs(3))
                    .map_err(anyhow::Error::msg)?
                    .into_iter()
                    .next()
                    .map(|n| n.url)
                    .context("no node found over mDNS")?,
                (None, None) => load_session(&cli).map(|s| s.node).context("pass --node URL or --mdns IFACE")?,
            };
            let mut c = Client::new(&node);
            let resp = c.login(account, password).map_err(api_error)?;
            let s = Session { node: node.clone(), token: resp.token.clone(), account: account.clone() };
            let path = session_path(&cli);
            std::fs::write(&path, serde_json::to_vec_pretty(&s)?)
                .with_context(|| format!("writing {}", path.display()))?;
            if cli.json {
                out!("{}", serde_json::to_string_pretty(&resp)?);
            } else {
                out!(
                    "已登录 {} ({})  角色 {}  站点 {}  节点 {node}",
                    resp.name,
                    account,
                    resp.roles.join(","),
                    resp.station
                );
            }
            Ok(0)
        }
        Command::Show { code } => {
            let d = client(&cli)?.cylinder(code).map_err(api_error)?;
            if cli.json {
                out!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print_detail(&d);
            }
            Ok(0)
        }
        Command::Anomalies { kind, cylinder, enterprise } => {
            let q = AnomalyQuery {
                kind: kind.clone(),
                cylinder: cylinder.clone(),
                enterprise: enterprise.clone(),
                page: None,
                page_size: Some(500),
            };
            let page = client(&cli)?.anomalies(&q).map_err(api_error)?;
            if cli.json {
                out!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                out!("异常 / anomalies: {}", page.total);
                for a in &page.items {
                    out!("  {}  {} ({})  {}", a.at, a.kind_zh, a.kind, a.cylinders.join(", "));
                    out!("    {}", a.message_zh);
                    out!("    {}", a.message_en);
                    for e in &a.events {
                        print_event(e);
                    }
                }
            }
            Ok(0)
        }
        Command::Check { code, medium, mass } => {
            let r = client(&cli)?.fill_check(code, medium.as_deref(), *mass).map_err(api_error)?;
            if cli.json {
                out!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_verdict(&r);
            }
            Ok(if r.allowed { 0 } else { EXIT_REFUSED })
        }
        other => {
            let (code, op, op_args) = operation(other)?;
            let req =
                OperationRequest { op_id: op_args.op_id.clone().unwrap_or_else(new_op_id), code: code.to_owned(), op };
            match client(&cli)?.operation(&req) {
                Ok(resp) => {
                    if cli.json {
                        out!("{}", serde_json::to_string_pretty(&resp)?);
                    } else {
                        let again =
                            if resp.replayed { "（重复提交，返回首次结果 / replayed）" } else { "" };
                        out!("已记录 / recorded: {} {}{again}", resp.event.kind_zh, resp.event.code);
                        out!("  事件 {}  时间 {}  操作人 {}", resp.event.id, resp.event.at, resp.event.operator);
                        print_state(&resp.state);
                    }
                    Ok(0)
                }
                Err(ClientError::Api { body, .. }) if !body.reasons.is_empty() => {
                    if cli.json {
                        out!("{}", serde_json::to_string_pretty(&body)?);
                    } else {
                        out!("禁止 / REFUSED  {}", body.message_zh);
                        print_reasons(&body.reasons);
                    }
                    Ok(EXIT_REFUSED)
                }
                Err(e) => Err(api_error(e)),
            }
        }
    }
}

fn operation(c: &Command) -> anyhow::Result<(&str, Operation, &OpArgs)> {
    let items = |v: &Vec<String>| v.clone();
    Ok(match c {
        Command::BindTag { code, tag, op } => (code, Operation::BindTag { tag: tag.clone() }, op),
        Command::ReceiveEmpty { code, warehouse, op } => {
            (code, Operation::ReceiveEmpty { warehouse: warehouse.clone() }, op)
        }
        Command::PreFillCheck { code, failed, op } => {
            (code, Operation::PreFillCheck { passed: failed.is_empty(), failed_items: items(failed) }, op)
        }
        Command::Fill { code, medium, mass, batch, op } => {
            (code, Operation::Fill { medium: medium.clone(), filled_mass_kg: *mass, batch: batch.clone() }, op)
        }
        Command::PostFillCheck { code, failed, op } => {
            (code, Operation::PostFillCheck { passed: failed.is_empty(), failed_items: items(failed) }, op)
        }
        Command::StoreFull { code, warehouse, op } => (code, Operation::StoreFull { warehouse: warehouse.clone() }, op),
        Command::Dispatch { code, order, op } => (code, Operation::Dispatch { order: order.clone() }, op),
        Command::Deliver { code, customer, order, name, phone, address, op } => (
            code,
            Operation::Deliver {
                customer: customer.clone(),
                order: order.clone(),
                customer_name: name.clone(),
                customer_phone: phone.clone(),
                customer_address: address.clone(),
            },
            op,
        ),
        Command::Return { code, customer, slip, op } => {
            (code, Operation::Return { customer: customer.clone(), slip: slip.clone() }, op)
        }
        Command::Repair { code, description, op } => (code, Operation::Repair { description: description.clone() }, op),
        Command::SendToInspection { code, reason, op } => {
            (code, Operation::SendToInspection { reason: reason.clone() }, op)
        }
        Command::InspectionResult { code, failed, report, date, next_due, op } => (
            code,
            Operation::InspectionResult {
                passed: !failed,
                report_no: report.clone(),
                inspected_on: date.clone(),
                next_due: next_due.clone(),
            },
            op,
        ),
        Command::Scrap { code, reason, op } => (code, Operation::Scrap { reason: reason.clone() }, op),
        Command::Finding { code, hold, release, finding, note, op } => {
            let action = match (hold, release) {
                (true, false) => "hold",
                (false, true) => "release",
                _ => bail!("give exactly one of --hold or --release"),
            };
            (
                code,
                Operation::RegulatorFinding { action: action.into(), finding: finding.clone(), note: note.clone() },
                op,
            )
        }
        Command::Correct { code, target, reason, note, op } => {
            (code, Operation::Correction { target: target.clone(), reason: reason.clone(), note: note.clone() }, op)
        }
        Command::Discover { .. }
        | Command::Login { .. }
        | Command::Show { .. }
        | Command::Check { .. }
        | Command::Anomalies { .. } => {
            bail!("not an operation")
        }
    })
}

fn api_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Api { status, body } => {
            anyhow::anyhow!("{} ({status} {}): {}", body.message_zh, body.code, body.message_en)
        }
        other => anyhow::Error::new(other),
    }
}

fn print_verdict(r: &FillCheckResponse) {
    if r.allowed {
        out!("允许充装 / ALLOWED  {}", r.code);
    } else {
        out!("禁止充装 / REFUSED  {}  ({} 条原因 / reasons)", r.code, r.reasons.len());
        print_reasons(&r.reasons);
    }
    out!("  规则表 {}  校验时间 {}", r.rule_table, r.checked_at);
}

fn print_reasons(reasons: &[Reason]) {
    for (i, r) in reasons.iter().enumerate() {
        out!("  {}. [{}] {}", i + 1, r.rule, r.message_zh);
        out!("     {}", r.message_en);
        out!("     依据 / regulation: {}", r.regulation);
    }
}

fn print_state(s: &State) {
    let full = match s.full {
        Some(true) => "重瓶",
        Some(false) => "空瓶",
        None => "未知",
    };
    out!(
        "  状态 {}{}  {}  充装次数 {}  下次检验 {}",
        s.status_zh,
        s.place.as_deref().map(|p| format!("（{p}）")).unwrap_or_default(),
        full,
        s.fill_count,
        s.next_inspection
    );
    if s.scrapped {
        out!("  已报废 / scrapped");
    }
    if let Some(h) = &s.inspection_hold {
        out!("  待检验 / held for inspection: {h}");
    }
    if !s.regulator_holds.is_empty() {
        out!("  监管查封 / regulator holds: {}", s.regulator_holds.join(", "));
    }
}

fn print_detail(d: &CylinderDetail) {
    let a = &d.archive;
    out!("气瓶 {}  {} {}  出厂编号 {}", a.code, a.variety, a.medium, a.serial);
    out!(
        "  制造 {} {} ({})  水容积 {} L  皮重 {}  产权 {} {}",
        a.maker,
        a.manufactured,
        a.standard,
        a.water_volume_l,
        a.tare_kg.map_or("未知".to_owned(), |t| format!("{t} kg")),
        a.owner,
        a.property
    );
    print_state(&d.state);
    out!("  最近记录 / recent events:");
    for e in &d.recent_events {
        print_event(e);
    }
}

fn print_event(e: &EventView) {
    out!("    {}  {:<8} {}  @{}  {}", e.at, e.kind_zh, e.operator, e.place, e.fields);
}
