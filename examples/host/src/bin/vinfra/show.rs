//! What `vinfra` prints for people: aligned tables, key-value blocks, and a task's
//! progress (a bar on a terminal, a line per step otherwise).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use vinfra_host::api::{HostEvent, HostInfo, TaskInfo, TaskState, VmInfo};

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| (*h).to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 20))
}

pub fn host(h: &HostInfo) {
    println!("host          {} (id {})", h.name, h.id);
    println!("version       {}", h.version);
    println!("uptime        {:.1} s", h.uptime_ms as f64 / 1000.0);
    println!(
        "capacity      {} CPUs, {} MiB",
        h.capacity.cpus, h.capacity.memory_mib
    );
    println!(
        "load          {:.1} % CPU, {} MiB used",
        h.load.cpu_percent, h.load.memory_used_mib
    );
    println!(
        "page sharing  {} pages sharing, {} MiB saved",
        h.ksm.pages_sharing,
        mib(h.ksm.saved_bytes)
    );
    println!(
        "VMs           {} defined, {} running, {} here",
        h.vms.defined, h.vms.running, h.vms.running_here
    );
    let ha: Vec<String> =
        h.ha.iter()
            .map(|p| format!("{}: {}", p.id, json_word(&p.verdict)))
            .collect();
    println!("HA            {}", ha.join(", "));
}

/// A snake_case enum as its JSON word.
pub fn json_word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

pub fn vms(vms: &[VmInfo]) {
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            vec![
                v.spec.name.clone(),
                json_word(&v.state),
                v.host.map_or("-".into(), |h| h.to_string()),
                v.spec.memory_mib.to_string(),
                v.spec.vcpus.to_string(),
                v.stats
                    .as_ref()
                    .map_or("-".into(), |s| format!("{:.1}", s.cpu_percent)),
                v.stats.as_ref().map_or("-".into(), |s| mib(s.rss_bytes)),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "HOST",
            "MEMORY_MIB",
            "VCPUS",
            "CPU_%",
            "RSS_MIB",
        ],
        &rows,
    );
}

pub fn vm(v: &VmInfo) {
    let s = &v.spec;
    println!("name        {}", s.name);
    println!("state       {}", json_word(&v.state));
    println!(
        "host        {}",
        v.host.map_or("-".into(), |h| h.to_string())
    );
    println!("kernel      {}", s.kernel);
    if let Some(initrd) = &s.initrd {
        println!("initrd      {initrd}");
    }
    println!("cmdline     {}", s.cmdline);
    println!("memory      {} MiB, {} vCPUs", s.memory_mib, s.vcpus);
    for (i, d) in s.disks.iter().enumerate() {
        println!("disk {i}      {} MiB", d.size_mib);
    }
    for (i, n) in s.nics.iter().enumerate() {
        println!(
            "nic {i}       {} {}",
            n.portgroup,
            n.mac.as_deref().unwrap_or("(MAC by the host)")
        );
    }
    println!(
        "HA          priority {}, isolation {}",
        json_word(&s.ha.priority),
        json_word(&s.ha.isolation_response)
    );
    let r = &s.resources;
    println!(
        "resources   {} shares, {} MHz, {} MiB reserved, limit {}",
        r.shares,
        r.cpu_mhz,
        r.reservation_mib,
        r.limit_mib.map_or("none".into(), |l| format!("{l} MiB"))
    );
    if let Some(st) = &v.stats {
        println!(
            "stats       {:.1} % CPU, {} MiB RSS, disk {} reads ({} bytes) {} writes ({} bytes) \
             {} flushes, console {} bytes in {} out",
            st.cpu_percent,
            mib(st.rss_bytes),
            st.disk_reads,
            st.disk_read_bytes,
            st.disk_writes,
            st.disk_written_bytes,
            st.disk_flushes,
            st.console_in_bytes,
            st.console_bytes
        );
    }
}

pub fn tasks(tasks: &[TaskInfo]) {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let message = match &t.error {
                Some(e) => e.message.clone(),
                None => t.message.clone(),
            };
            vec![
                t.id.to_string(),
                t.op.as_str().to_string(),
                t.vm.clone(),
                json_word(&t.state),
                format!("{:.0}%", t.progress * 100.0),
                message,
            ]
        })
        .collect();
    table(&["ID", "OP", "VM", "STATE", "PROGRESS", "MESSAGE"], &rows);
}

pub fn events(events: &[HostEvent]) {
    for e in events {
        println!("{:>6} {:>9} ms  {:<20} {}", e.seq, e.ms, e.event, e.data);
    }
}

/// A followed task as the person sees it.
pub struct TaskProgress {
    id: u64,
    bar: Option<ProgressBar>,
    /// Without a terminal: the last step printed, so each is printed once.
    last_line: Option<String>,
    quiet: bool,
}

impl TaskProgress {
    pub fn new(id: u64, json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(1000);
            // The template is a constant; a bad one would be a bug caught by any run.
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} task {prefix} [{bar:30}] {percent:>3}% {wide_msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(id.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self {
            id,
            bar,
            last_line: None,
            quiet: json,
        }
    }

    pub fn update(&mut self, task: &TaskInfo) {
        let what = format!("{} {}", task.op.as_str(), task.vm);
        self.step(task.progress, &what, &task.message);
    }

    /// A running task's progress (0 to 1), what it does (`migrate web1`) and its message;
    /// the host's and the management server's tasks both come through here.
    pub fn step(&mut self, progress: f64, what: &str, message: &str) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "progress is clamped to 0..=1 here"
        )]
        let position = (progress.clamp(0.0, 1.0) * 1000.0).round() as u64;
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(format!("{what}: {message}"));
        } else if !self.quiet {
            let line = format!(
                "task {} ({what}): {:>3.0}% {message}",
                self.id,
                progress * 100.0,
            );
            if self.last_line.as_ref() != Some(&line) {
                eprintln!("{line}");
                self.last_line = Some(line);
            }
        }
    }

    pub fn finish(&mut self, task: &TaskInfo) {
        let what = format!("{} {}", task.op.as_str(), task.vm);
        let result = match task.state {
            TaskState::Success => Some(task.result.as_ref()),
            TaskState::Error | TaskState::Running => None,
        };
        self.done(&what, result);
    }

    /// The task ended: `result` is `Some` (its result, if any) when it succeeded; a
    /// failure is said by the caller's error.
    pub fn done(&mut self, what: &str, result: Option<Option<&serde_json::Value>>) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        let what = format!("task {} ({what})", self.id);
        match result {
            Some(Some(r)) if !r.is_null() => println!("{what}: success {r}"),
            Some(_) => println!("{what}: success"),
            None => {}
        }
    }
}
