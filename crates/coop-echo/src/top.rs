//! `coop-echo top --admin ADDR`: the seed's picture of the scheduler, live.
//!
//! Once a second it scrapes a running server's `/metrics` and draws the three places a
//! task can be (the ready queue, the read waiting area, the write waiting area), the
//! connections, and the throughput of the last minute. `q` (or Esc, or Ctrl-C) quits.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Sparkline};
use ratatui::{DefaultTerminal, Frame};

/// Threads whose queues are drawn, at most (a 24-line terminal shows four).
const MAX_THREADS_SHOWN: usize = 8;

/// Samples of messages per second kept for the sparkline: a minute's worth.
const HISTORY: usize = 60;

/// One scrape, the figures the view shows.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    ready: u64,
    reading: u64,
    writing: u64,
    tasks: u64,
    open: u64,
    total: u64,
    bytes_in: u64,
    bytes_out: u64,
    rate: f64,
    /// Each serving thread's queues, `(ready, reading, writing)`, when the server
    /// reports them (`serve --threads`).
    threads: Vec<(u64, u64, u64)>,
}

/// Runs the view until the user quits.
pub fn run(admin: SocketAddr) -> ExitCode {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        eprintln!("coop-echo: top draws on a terminal, and stdout is not one");
        return ExitCode::FAILURE;
    }
    let mut terminal = ratatui::init();
    let outcome = view(&mut terminal, admin);
    ratatui::restore();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coop-echo: top: {e}");
            ExitCode::FAILURE
        }
    }
}

fn view(terminal: &mut DefaultTerminal, admin: SocketAddr) -> io::Result<()> {
    let mut history: VecDeque<u64> = VecDeque::with_capacity(HISTORY);
    let mut latest: Result<Snapshot, String> = Err("connecting...".into());
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            latest = scrape(admin).map_err(|e| e.to_string());
            if let Ok(snapshot) = &latest {
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(snapshot.rate.round() as u64);
            }
            next += Duration::from_secs(1);
            terminal.draw(|frame| draw(frame, admin, &latest, &history))?;
        }
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(key) = event::read()? {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                    return Ok(());
                }
            }
            terminal.draw(|frame| draw(frame, admin, &latest, &history))?;
        }
    }
}

fn draw(
    frame: &mut Frame<'_>,
    admin: SocketAddr,
    latest: &Result<Snapshot, String>,
    history: &VecDeque<u64>,
) {
    let [title, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let state = match latest {
        Ok(_) => "the scheduler, live",
        Err(_) => "not connected, trying again every second",
    };
    frame.render_widget(
        Line::from(format!(" coop-echo top: {admin}: {state}")).bold(),
        title,
    );
    frame.render_widget(Line::from(" q quits").dim(), footer);
    let snapshot = match latest {
        Ok(snapshot) => snapshot,
        Err(e) => {
            frame.render_widget(
                Paragraph::new(format!("cannot read http://{admin}/metrics: {e}"))
                    .wrap(ratatui::widgets::Wrap { trim: true })
                    .block(Block::bordered().title(" not connected ")),
                body,
            );
            return;
        }
    };
    // With several threads, each one's queues; with one, the runtime's.
    let shown: Vec<(u64, u64, u64)> = if snapshot.threads.len() > 1 {
        snapshot
            .threads
            .iter()
            .copied()
            .take(MAX_THREADS_SHOWN)
            .collect()
    } else {
        vec![(snapshot.ready, snapshot.reading, snapshot.writing)]
    };
    let several = shown.len() > 1;
    // One thread: three bars a line apart. Several: three bars on three lines for each,
    // a line between threads. The border takes two lines more.
    let height = if several {
        4 * shown.len() as u16 + 1
    } else {
        9
    };
    let [queues, traffic] =
        Layout::vertical([Constraint::Length(height), Constraint::Min(6)]).areas(body);
    // The count goes in the label, right-aligned, with the chart's margin after it: drawn
    // as the bar's text it would sit on the bar, as in `ready 2██████`.
    let width = shown
        .iter()
        .flat_map(|&(a, b, c)| [a, b, c])
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1);
    let bar = |label: String, value: u64, color: Color| {
        Bar::default()
            .label(Line::from(format!("{label} {value:>width$}")))
            .value(value)
            .text_value(String::new())
            .style(Style::default().fg(color))
    };
    let mut title = format!(
        " tasks: {} (ready queue / waiting to read / waiting to write) ",
        snapshot.tasks
    );
    if snapshot.threads.len() > MAX_THREADS_SHOWN {
        title.push_str(&format!(
            "(first {MAX_THREADS_SHOWN} threads of {}) ",
            snapshot.threads.len()
        ));
    }
    let mut chart = BarChart::default()
        .block(Block::bordered().title(title))
        .direction(ratatui::layout::Direction::Horizontal)
        .bar_width(1)
        .bar_gap(u16::from(!several))
        .group_gap(1);
    for (index, &(ready, reading, writing)) in shown.iter().enumerate() {
        let name = |what: &str| {
            if several {
                format!("thread {index} {what}")
            } else {
                what.to_string()
            }
        };
        chart = chart.data(BarGroup::default().bars(&[
            bar(name("ready"), ready, Color::Green),
            bar(name("read "), reading, Color::Cyan),
            bar(name("write"), writing, Color::Yellow),
        ]));
    }
    frame.render_widget(chart, queues);

    let [numbers, spark] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(3)]).areas(traffic);
    frame.render_widget(
        Paragraph::new(format!(
            "connections {} open, {} in all   bytes {} in, {} out   {:.0} msg/s",
            snapshot.open, snapshot.total, snapshot.bytes_in, snapshot.bytes_out, snapshot.rate
        ))
        .block(Block::bordered().title(" server ")),
        numbers,
    );
    let samples: Vec<u64> = history.iter().copied().collect();
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(" messages per second, last minute "))
            .data(&samples)
            .style(Style::default().fg(Color::Magenta)),
        spark,
    );
}

/// One `GET /metrics`, parsed into the figures the view needs.
fn scrape(admin: SocketAddr) -> io::Result<Snapshot> {
    let not_admin = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}: is this the server's --admin address?"),
        )
    };
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_millis(800)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: coop-echo\r\n\r\n")?;
    let mut response = String::new();
    match stream.read_to_string(&mut response) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(not_admin("no HTTP reply within 0.8 s"));
        }
        Err(e) => return Err(e),
    }
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| not_admin("not an HTTP reply"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.") || status.split_whitespace().nth(1) != Some("200") {
        return Err(not_admin(&format!("the reply was {status:?}")));
    }
    if !body.lines().any(|l| l.starts_with("coop_tasks ")) {
        return Err(not_admin("no coop metrics in the reply"));
    }
    Ok(parse(body))
}

fn parse(body: &str) -> Snapshot {
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let count = |name: &str| value(name) as u64;
    Snapshot {
        ready: count("coop_tasks_ready"),
        reading: count("coop_tasks_parked{area=\"read\"}"),
        writing: count("coop_tasks_parked{area=\"write\"}"),
        tasks: count("coop_tasks"),
        open: count("echo_connections_open"),
        total: count("echo_connections_total"),
        bytes_in: count("echo_bytes_in_total"),
        bytes_out: count("echo_bytes_out_total"),
        rate: value("echo_messages_per_second"),
        threads: (0..)
            .map_while(|i| {
                let ready = format!("coop_tasks_ready_by_thread{{thread=\"{i}\"}}");
                body.lines()
                    .any(|l| l.starts_with(&format!("{ready} ")))
                    .then(|| {
                        let parked = |area: &str| {
                            count(&format!(
                                "coop_tasks_parked_by_thread{{thread=\"{i}\",area=\"{area}\"}}"
                            ))
                        };
                        (count(&ready), parked("read"), parked("write"))
                    })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// The screen `draw` makes of `latest`, as lines of text.
    fn screen(latest: &Result<Snapshot, String>) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let admin: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        terminal
            .draw(|frame| draw(frame, admin, latest, &VecDeque::from([5, 9])))
            .unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn each_count_stands_apart_from_its_bar() {
        let snapshot = Snapshot {
            ready: 2,
            reading: 53,
            writing: 0,
            tasks: 55,
            ..Snapshot::default()
        };
        let lines = screen(&Ok(snapshot));
        assert!(
            lines[0].contains("127.0.0.1:9000: the scheduler, live"),
            "{lines:#?}"
        );
        for (label, count) in [("ready", "2"), ("read ", "53"), ("write", "0")] {
            let line = lines
                .iter()
                .find(|l| l.contains(&format!("│{label}")))
                .unwrap_or_else(|| panic!("no {label} bar: {lines:#?}"));
            let after = line.split_once(label).unwrap().1;
            let figures = after.trim_start().split_once(' ').unwrap_or((after, "")).0;
            assert_eq!(figures, count, "{line}");
            assert!(!after.contains(&format!("{count}█")), "{line}");
        }
    }

    #[test]
    fn the_title_says_when_it_is_not_connected() {
        let lines = screen(&Err("connection refused".into()));
        assert!(lines[0].contains("not connected"), "{lines:#?}");
        assert!(!lines[0].contains("live"), "{lines:#?}");
    }

    #[test]
    fn a_scrape_is_read_by_name() {
        let body = "coop_tasks 4\ncoop_tasks_ready 1\ncoop_tasks_parked{area=\"write\"} 2\n\
                    coop_tasks_parked{area=\"read\"} 3\necho_connections_total 7\n\
                    echo_messages_per_second 12.5\n# EOF\n";
        let s = parse(body);
        assert_eq!((s.tasks, s.ready, s.reading, s.writing), (4, 1, 3, 2));
        assert_eq!(s.total, 7);
        assert_eq!(s.rate, 12.5);
        assert!(s.threads.is_empty());
    }

    #[test]
    fn each_threads_queues_are_read_and_drawn() {
        let body = "coop_tasks 9\n\
                    coop_tasks_ready_by_thread{thread=\"0\"} 1\n\
                    coop_tasks_ready_by_thread{thread=\"1\"} 0\n\
                    coop_tasks_parked_by_thread{thread=\"0\",area=\"read\"} 4\n\
                    coop_tasks_parked_by_thread{thread=\"0\",area=\"write\"} 0\n\
                    coop_tasks_parked_by_thread{thread=\"1\",area=\"read\"} 38\n\
                    coop_tasks_parked_by_thread{thread=\"1\",area=\"write\"} 2\n# EOF\n";
        let s = parse(body);
        assert_eq!(s.threads, [(1, 4, 0), (0, 38, 2)]);
        let lines = screen(&Ok(s));
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle}: {lines:#?}"))
        };
        assert!(at("thread 0 ready") < at("thread 1 ready"), "{lines:#?}");
        for (bar, count) in [
            ("thread 0 read ", "4"),
            ("thread 1 read ", "38"),
            ("thread 1 write", "2"),
        ] {
            let line = &lines[at(bar)];
            let after = line.split_once(bar).unwrap().1.trim_start();
            assert_eq!(
                after.split_once(' ').unwrap_or((after, "")).0,
                count,
                "{line}"
            );
        }
    }
}
