//! Rendering: a pure function of the [`App`] view model onto a ratatui
//! frame, so the same model always gives the same screen (the snapshot
//! tests hold it to that at 80×24 and 120×40).

use blixard_node::{TransferInfo, TransferState};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Sparkline, Table, TableState, Tabs, Wrap},
    Frame,
};

use super::{
    app::{App, ResourceRow, Tab, TABS},
    overlay::{help, prompt, stats_panel},
    style::{bar, block, bold, eta, human, rate, short},
};

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [top, tabs, body, status] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)])
            .areas(frame.area());
    frame.render_widget(Paragraph::new(title(app)), top);
    let titles: Vec<String> = TABS.iter().enumerate().map(|(i, t)| format!("{} {}", i + 1, t.title())).collect();
    let selected = TABS.iter().position(|t| *t == app.current_tab()).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles).select(selected).highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        tabs,
    );
    match &app.offline {
        Some(why) => offline(frame, body, app, why),
        None => match app.current_tab() {
            Tab::Overview => overview(frame, body, app),
            Tab::Resources => resources(frame, body, app),
            Tab::Transfers => transfers(frame, body, app, &app.transfers),
            Tab::Logs => logs(frame, body, app),
            Tab::P2p => p2p(frame, body, app),
        },
    }
    let line = match &app.message {
        Some(m) => m.clone(),
        None => "?:help p:P2P c:connect l:list d:get q:queue u:upload s:stats r:refresh Esc:quit".into(),
    };
    frame.render_widget(Paragraph::new(line).style(Style::default().fg(Color::DarkGray)), status);
    if app.stats_panel {
        stats_panel(frame, app);
    }
    if let Some(p) = &app.prompt {
        prompt(frame, p);
    }
    if app.help {
        help(frame);
    }
}

fn title(app: &App) -> Line<'static> {
    let mut spans = vec![Span::styled("blixard ", Style::default().add_modifier(Modifier::BOLD))];
    match &app.stats {
        _ if app.offline.is_some() => {
            spans.push(Span::styled(format!("control API {} unreachable", app.target), Style::default().fg(Color::Red)))
        }
        Some(s) => {
            spans.push(Span::raw(format!("node {} {}  ", short(&s.node_id), s.addr)));
            let (text, color) = if s.p2p_enabled { ("P2P on", Color::Green) } else { ("P2P off", Color::Red) };
            spans.push(Span::styled(text, Style::default().fg(color).add_modifier(Modifier::BOLD)));
        }
        None => spans.push(Span::raw(format!("control API {}", app.target))),
    }
    Line::from(spans)
}

fn offline(frame: &mut Frame, area: Rect, app: &App, why: &str) {
    let text = vec![
        Line::from(Span::styled("The node is not running (or not answering).", Style::default().fg(Color::Red))),
        Line::from(""),
        Line::from(format!("control API: {}", app.target)),
        Line::from(format!("error: {why}")),
        Line::from(""),
        Line::from("Start it with `blixard node --id N` (or pick another with --node N / --data-dir DIR)."),
        Line::from("This view retries every second; Esc quits."),
    ];
    frame.render_widget(Paragraph::new(text).block(block("Node unreachable")).wrap(Wrap { trim: false }), area);
}

fn overview(frame: &mut Frame, area: Rect, app: &App) {
    let active = app.active_transfers();
    let rows = (active.len() as u16 + 3).clamp(4, 10);
    let [info, moving, recent] =
        Layout::vertical([Constraint::Length(8), Constraint::Length(rows), Constraint::Min(3)]).areas(area);
    let lines = match &app.stats {
        Some(s) => vec![
            Line::from(format!("node       {}", s.node_id)),
            Line::from(format!("address    {}", s.addr)),
            Line::from(format!("peers      {} connected, {} known", s.peers_connected, s.peers_known)),
            Line::from(format!("transfers  {} running, {} queued", s.transfers_active, s.transfers_queued)),
            Line::from(format!("traffic    {} sent, {} received", human(s.bytes_sent), human(s.bytes_received))),
            Line::from(format!("resources  {} here", s.resources)),
        ],
        None => vec![Line::from("waiting for the node...")],
    };
    frame.render_widget(Paragraph::new(lines).block(block("Node")), info);
    transfers(frame, moving, app, &active);
    logs(frame, recent, app);
}

fn resources(frame: &mut Frame, area: Rect, app: &App) {
    let rows: Vec<Row> = app
        .rows()
        .iter()
        .map(|row| {
            let r = row.resource();
            let (place, publisher) = match row {
                ResourceRow::Local(_) => ("here".to_string(), "-".to_string()),
                ResourceRow::Remote { claim, peers } => (
                    format!("{peers} peer{}", if *peers == 1 { "" } else { "s" }),
                    if claim.trusted { "trusted".into() } else { format!("untrusted {}", short(&claim.publisher)) },
                ),
            };
            Row::new(vec![
                Cell::from(place),
                Cell::from(r.name.clone()),
                Cell::from(r.version.clone()),
                Cell::from(human(r.size)),
                Cell::from(publisher),
                Cell::from(r.hash.to_hex()[..12].to_string()),
            ])
        })
        .collect();
    let empty = rows.is_empty();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Min(14),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(18),
            Constraint::Length(12),
        ],
    )
    .header(Row::new(["Where", "Name", "Version", "Size", "Publisher", "Hash"]).style(bold()))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .block(block("Resources (d download, q queue, l refresh)"));
    let mut state = TableState::default().with_selected((!empty).then_some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn transfers(frame: &mut Frame, area: Rect, app: &App, list: &[TransferInfo]) {
    let mut rows: Vec<Row> = list
        .iter()
        .rev()
        .map(|t| {
            let p = t.progress.as_ref();
            let fraction =
                p.filter(|p| p.total > 0).map_or(if t.state == TransferState::Completed { 1.0 } else { 0.0 }, |p| {
                    p.bytes as f64 / p.total as f64
                });
            let running = t.state == TransferState::Running;
            let sources = p.map_or(String::new(), |p| {
                let total: u64 = p.shares.iter().map(|s| s.bytes).sum::<u64>().max(1);
                let each: Vec<String> = p
                    .shares
                    .iter()
                    .map(|s| format!("{} {:.0}%", &short(&s.peer)[..4], 100.0 * s.bytes as f64 / total as f64))
                    .collect();
                each.join(" ")
            });
            let state = match (&t.state, &t.error) {
                (TransferState::Failed, Some(e)) => format!("failed: {}", e.message),
                (s, _) => format!("{s:?}").to_lowercase(),
            };
            Row::new(vec![
                Cell::from(t.id.0.to_string()),
                Cell::from(format!("{} {}", t.name, t.version)),
                Cell::from(t.priority.to_string()),
                Cell::from(state),
                Cell::from(format!("{:>3.0}% {}", fraction * 100.0, bar(fraction, 10))),
                Cell::from(if running { p.map_or("-".into(), |p| rate(p.speed_bps)) } else { "-".into() }),
                Cell::from(if running { p.and_then(|p| p.eta_secs).map_or("-".into(), eta) } else { "-".into() }),
                Cell::from(t.limit_mbps.map_or("-".into(), |m| format!("{m} Mb/s"))),
                Cell::from(sources),
            ])
        })
        .collect();
    for u in &app.uploads {
        let fraction = if u.total == 0 { 1.0 } else { u.bytes as f64 / u.total as f64 };
        rows.insert(
            0,
            Row::new(vec![
                Cell::from("up"),
                Cell::from(u.path.display().to_string()),
                Cell::from("-"),
                Cell::from("importing"),
                Cell::from(format!("{:>3.0}% {}", fraction * 100.0, bar(fraction, 10))),
            ]),
        );
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(15),
            Constraint::Length(11),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Min(0),
        ],
    )
    .header(
        Row::new(["Id", "Resource", "Priority", "State", "Progress", "Rate", "ETA", "Limit", "Sources"]).style(bold()),
    )
    .block(block("Transfers"));
    frame.render_widget(table, area);
}

fn logs(frame: &mut Frame, area: Rect, app: &App) {
    let height = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> =
        app.log.iter().skip(app.log.len().saturating_sub(height)).map(|l| Line::from(l.as_str())).collect();
    frame.render_widget(Paragraph::new(lines).block(block("Events")), area);
}

fn p2p(frame: &mut Frame, area: Rect, app: &App) {
    let peer_rows = (app.peers.len() as u16 + 3).clamp(4, 12);
    let [peers, spark, moving] =
        Layout::vertical([Constraint::Length(peer_rows), Constraint::Length(5), Constraint::Min(3)]).areas(area);
    let rows: Vec<Row> = app
        .peers
        .iter()
        .map(|p| {
            let path = p.path.as_ref().map_or_else(|| format!("(last {})", p.addr), |path| path.to_string());
            Row::new(vec![
                Cell::from(short(&p.id)),
                Cell::from(path),
                Cell::from(p.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms"))),
                Cell::from(human(p.bytes_sent)),
                Cell::from(human(p.bytes_received)),
                Cell::from(Span::styled(
                    if p.connected { "connected" } else { "gone" },
                    Style::default().fg(if p.connected { Color::Green } else { Color::DarkGray }),
                )),
            ])
        })
        .collect();
    let on = app.stats.as_ref().is_none_or(|s| s.p2p_enabled);
    let title = if on { "Peers (c connect, p turn P2P off)" } else { "Peers: P2P is OFF (p turns it on)" };
    let table = Table::new(
        rows,
        [
            Constraint::Length(9),
            Constraint::Min(20),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(["Peer", "Path", "RTT", "Sent", "Received", "State"]).style(bold()))
    .block(block(title));
    frame.render_widget(table, peers);
    let [rx, tx] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(spark);
    for (area, samples, what) in [(rx, &app.rx_rate, "in"), (tx, &app.tx_rate, "out")] {
        let now = samples.back().copied().unwrap_or(0);
        let peak = samples.iter().copied().max().unwrap_or(0);
        let title = format!("{what} {} (peak {})", rate(now as f64), rate(peak as f64));
        // The newest samples that fit.
        let width = area.width.saturating_sub(2) as usize;
        let data: Vec<u64> = samples.iter().skip(samples.len().saturating_sub(width)).copied().collect();
        frame.render_widget(
            Sparkline::default().block(block(&title)).data(&data).style(Style::default().fg(Color::Cyan)),
            area,
        );
    }
    let active = app.active_transfers();
    transfers(frame, moving, app, &active);
}

#[cfg(test)]
mod tests {
    use blixard_node::{client::EventLine, NodeId, P2pEvent, PeerInfo, PeerPath, TransferId};
    use ratatui::{backend::TestBackend, Terminal};

    use super::{
        super::app::{tests::*, Snapshot, Update},
        *,
    };

    /// The fixed model every snapshot shows: a node with peers, a running
    /// and a queued transfer, listings, events and a throughput history.
    fn model() -> App {
        let mut app = listed();
        let running = transfer(2, TransferState::Running);
        let mut queued = transfer(3, TransferState::Queued);
        queued.name = "nixos".into();
        queued.version = "24.11".into();
        queued.progress = None;
        queued.limit_mbps = None;
        queued.priority = blixard_node::TransferPriority::Low;
        let mut done = transfer(1, TransferState::Completed);
        if let Some(p) = done.progress.as_mut() {
            p.bytes = p.total;
        }
        done.name = "debian".into();
        done.version = "12".into();
        let peer = |n: u8, connected: bool| PeerInfo {
            id: NodeId([n; 32]),
            addr: format!("10.0.0.{n}:7001").parse().unwrap(),
            connected,
            rtt_ms: connected.then_some(0.4 * n as f64),
            path: connected.then(|| PeerPath::Direct { addr: format!("10.0.0.{n}:7001").parse().unwrap() }),
            bytes_sent: 1500 * n as u64,
            bytes_received: (700 << 20) / n as u64,
        };
        for i in 0..30u64 {
            let mut s = stats(true);
            s.bytes_received += (i * i) << 20;
            s.bytes_sent += i << 18;
            app.apply(Update::Snapshot(Box::new(Snapshot {
                stats: s,
                peers: vec![peer(2, true), peer(3, true), peer(4, false)],
                transfers: vec![done.clone(), running.clone(), queued.clone()],
                local: vec![resource("debian", "12", 1)],
                uploads: Vec::new(),
                elapsed_secs: 1.0,
            })));
        }
        for (at, e) in [
            ("12:00:01", P2pEvent::PeerConnected(NodeId([2; 32]))),
            ("12:00:02", P2pEvent::TransferStarted(TransferId(1))),
            ("12:00:09", P2pEvent::TransferCompleted(TransferId(1))),
            ("12:00:10", P2pEvent::TransferStarted(TransferId(2))),
        ] {
            app.apply(Update::Event { at: at.into(), line: EventLine::Event(e) });
        }
        app.message = None;
        app
    }

    fn render(app: &App, w: u16, h: u16) -> TestBackend {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        terminal.backend().clone()
    }

    #[test]
    fn every_tab_at_80x24_and_120x40() {
        for (i, tab) in TABS.iter().enumerate() {
            let mut app = model();
            app.tab = super::super::app::TabState(*tab);
            app.selected = 1;
            for (w, h) in [(80, 24), (120, 40)] {
                let name = format!("tab{}_{}_{w}x{h}", i + 1, tab.title().to_lowercase());
                insta::assert_snapshot!(name, render(&app, w, h));
            }
        }
    }

    #[test]
    fn overlays_and_the_offline_screen() {
        let mut app = model();
        app.help = true;
        insta::assert_snapshot!("help_80x24", render(&app, 80, 24));
        let mut app = model();
        app.stats_panel = true;
        insta::assert_snapshot!("stats_80x24", render(&app, 80, 24));
        let mut app = model();
        app.tab = super::super::app::TabState(Tab::Resources);
        app.selected = 1;
        app.on_key(key(crossterm::event::KeyCode::Char('q')));
        app.on_key(key(crossterm::event::KeyCode::Up));
        insta::assert_snapshot!("queue_80x24", render(&app, 80, 24));
        let mut app = model();
        app.apply(Update::Offline("cannot use the node's control API at 127.0.0.1:7001: connection refused".into()));
        insta::assert_snapshot!("offline_80x24", render(&app, 80, 24));
        let mut app = model();
        app.stats = Some(stats(false));
        app.peers.clear();
        insta::assert_snapshot!("p2p_off_80x24", render(&app, 80, 24));
    }
}
