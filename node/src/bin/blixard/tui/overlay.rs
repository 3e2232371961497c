//! Overlays drawn over a tab: the key help, the statistics panel and the
//! prompts (connect, upload, queue).

use blixard_node::TransferState;
use ratatui::{
    layout::Rect,
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Clear, Paragraph},
    Frame,
};

use super::{
    app::{App, Prompt, PRIORITIES, UPLOAD_FIELDS},
    style::{block, bold, human, rate},
};

const HELP: [(&str, &str); 15] = [
    ("1-5, Tab", "switch tabs (5 is P2P)"),
    ("Up/Down, j/k", "select a resource"),
    ("p", "turn P2P on or off"),
    ("c", "connect to a peer"),
    ("r", "refresh"),
    ("u", "upload a VM image file"),
    ("d", "download the selected image"),
    ("q", "queue it with a priority and limit"),
    ("s", "statistics"),
    ("l", "list resources (local and on peers)"),
    ("?", "this help"),
    ("Esc, Ctrl-C", "quit (Esc closes a dialog first)"),
    ("", ""),
    ("In a dialog", "Tab next field, Enter confirm"),
    ("", "Up/Down pick a priority"),
];

/// A centered rectangle `w`×`h` (cells), clipped to `area`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let (w, h) = (w.min(area.width), h.min(area.height));
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

pub(super) fn help(frame: &mut Frame) {
    let area = centered(frame.area(), 60, HELP.len() as u16 + 2);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| Line::from(vec![Span::styled(format!("{k:<14}"), bold()), Span::raw(*what)]))
        .collect();
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(lines).block(block("Keys (any key closes)")), area);
}

pub(super) fn stats_panel(frame: &mut Frame, app: &App) {
    let area = centered(frame.area(), 76, 14);
    let count = |s: TransferState| app.transfers.iter().filter(|t| t.state == s).count();
    let peak = |v: &std::collections::VecDeque<u64>| v.iter().copied().max().unwrap_or(0) as f64;
    let mean = |v: &std::collections::VecDeque<u64>| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let mut lines = Vec::new();
    if let Some(s) = &app.stats {
        lines.push(Line::from(format!("sent      {}", human(s.bytes_sent))));
        lines.push(Line::from(format!("received  {}", human(s.bytes_received))));
    }
    lines.push(Line::from(format!(
        "in        now {}, mean {}, peak {}",
        rate(app.rx_rate.back().copied().unwrap_or(0) as f64),
        rate(mean(&app.rx_rate)),
        rate(peak(&app.rx_rate))
    )));
    lines.push(Line::from(format!(
        "out       now {}, mean {}, peak {}",
        rate(app.tx_rate.back().copied().unwrap_or(0) as f64),
        rate(mean(&app.tx_rate)),
        rate(peak(&app.tx_rate))
    )));
    lines.push(Line::from(format!(
        "transfers {} running, {} queued, {} done, {} failed, {} cancelled",
        count(TransferState::Running),
        count(TransferState::Queued),
        count(TransferState::Completed),
        count(TransferState::Failed),
        count(TransferState::Cancelled)
    )));
    let connected = app.peers.iter().filter(|p| p.connected).count();
    lines.push(Line::from(format!("peers     {connected} connected of {} known", app.peers.len())));
    let rtts: Vec<f64> = app.peers.iter().filter_map(|p| p.rtt_ms).collect();
    if !rtts.is_empty() {
        let best = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let worst = rtts.iter().copied().fold(0.0, f64::max);
        lines.push(Line::from(format!("rtt       {best:.1} to {worst:.1} ms")));
    }
    lines.push(Line::from(format!(
        "local     {} resource(s), {}",
        app.local.len(),
        human(app.local.iter().map(|r| r.size).sum())
    )));
    lines.push(Line::from(format!("on peers  {} listing(s)", app.remote.len())));
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(lines).block(block("Statistics (s or Esc closes)")), area);
}

pub(super) fn prompt(frame: &mut Frame, p: &Prompt) {
    let focus_style = |on: bool| if on { Style::default().add_modifier(Modifier::REVERSED) } else { Style::default() };
    let (title, lines) = match p {
        Prompt::Connect { input } => (
            "Connect to a peer (Enter, Esc cancels)",
            vec![
                Line::from("ID@HOST:PORT or HOST:PORT"),
                Line::from(Span::styled(format!("{input}_"), focus_style(true))),
            ],
        ),
        Prompt::Upload { fields, focus } => (
            "Upload a VM image (Tab next, Enter, Esc)",
            UPLOAD_FIELDS
                .iter()
                .zip(fields)
                .enumerate()
                .map(|(i, (label, value))| {
                    Line::from(vec![
                        Span::raw(format!("{label:<8}")),
                        Span::styled(
                            format!("{value}{}", if i == *focus { "_" } else { "" }),
                            focus_style(i == *focus),
                        ),
                    ])
                })
                .collect(),
        ),
        Prompt::Queue { resource, priority, limit, focus } => {
            let mut lines =
                vec![Line::from(format!("{} {} ({})", resource.name, resource.version, human(resource.size)))];
            for (i, pr) in PRIORITIES.iter().enumerate() {
                let mark = if i == *priority { ">" } else { " " };
                lines
                    .push(Line::from(Span::styled(format!("{mark} {pr}"), focus_style(i == *priority && *focus == 0))));
            }
            lines.push(Line::from(vec![
                Span::raw("limit Mbit/s "),
                Span::styled(format!("{limit}{}", if *focus == 1 { "_" } else { "" }), focus_style(*focus == 1)),
                Span::raw(if limit.is_empty() && *focus != 1 { "(none)" } else { "" }),
            ]));
            ("Queue a download (Up/Down, Tab, Enter, Esc)", lines)
        }
    };
    let area = centered(frame.area(), 56, lines.len() as u16 + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(lines).block(block(title)), area);
}
