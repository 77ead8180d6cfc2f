//! LibTorch's profiler (Kineto, through `profiler.cpp`): which operations a piece of work
//! ran, on which device, and for how long. `ibvae bench --profile` uses it on the timed
//! training steps, writes the Chrome trace (chrome://tracing, ui.perfetto.dev) and prints
//! [`Summary`]: the operations by self time, and on a GPU the kernels' busy time against
//! the wall time (the rest is the gaps between kernels).

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::fmt::Write as _;
use std::path::Path;

use tch::Device;

use super::ffi::{check, ibvae_free_error};
use crate::error::{Error, Result};

/// Kineto's `ActivityType` of a kernel on a GPU (`CONCURRENT_KERNEL`).
const GPU_KERNEL: u8 = 5;
/// Kineto's `GPU_MEMCPY` and `GPU_MEMSET`.
const GPU_COPY: [u8; 2] = [3, 4];

/// Where an event ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Where {
    /// An operation (or runtime call) on a host thread.
    Cpu,
    /// A kernel, copy or fill on the GPU.
    Gpu,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub place: Where,
    /// Kineto's `ActivityType`.
    pub activity: u8,
    /// The host thread (CPU events) or stream (GPU events).
    pub thread: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub name: String,
}

impl Event {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// A GPU kernel, copy or fill (what occupies the device).
    fn is_device_work(&self) -> bool {
        self.place == Where::Gpu
            && (self.activity == GPU_KERNEL || GPU_COPY.contains(&self.activity))
    }
}

/// A recording in progress; dropped unfinished, it stops and discards what it recorded.
#[derive(Debug)]
pub struct Profiler {
    running: bool,
}

impl Profiler {
    /// Starts recording this thread's operations, and on a GPU its kernels.
    pub fn start(device: Device) -> Result<Self> {
        // SAFETY: the function only configures LibTorch's profiler.
        check(unsafe { ibvae_profiler_start(device.is_cuda()) })?;
        Ok(Self { running: true })
    }

    /// Stops recording; writes the Chrome trace to `trace` if given.
    pub fn finish(mut self, trace: Option<&Path>) -> Result<Vec<Event>> {
        self.running = false;
        let path = trace
            .map(|p| {
                CString::new(p.as_os_str().as_encoded_bytes())
                    .map_err(|_| Error::Config(format!("{}: a path with a NUL byte", p.display())))
            })
            .transpose()?;
        let text = stop(path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()))?;
        parse_events(&text)
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if self.running {
            let _ = stop(std::ptr::null());
        }
    }
}

/// Stops the profiler and returns its events as text.
fn stop(trace: *const c_char) -> Result<String> {
    let mut events: *mut c_char = std::ptr::null_mut();
    // SAFETY: `trace` is null or a NUL-terminated path alive for the call; `events` is a
    // valid place for the result.
    check(unsafe { ibvae_profiler_stop(trace, &mut events) })?;
    if events.is_null() {
        return Ok(String::new());
    }
    // SAFETY: on success `events` is a NUL-terminated string allocated in C++ that this
    // side frees once, here.
    let text = unsafe { CStr::from_ptr(events) }
        .to_string_lossy()
        .into_owned();
    unsafe { ibvae_free_error(events) };
    Ok(text)
}

/// The events of `profiler.cpp`'s text: `device activity thread start_ns end_ns name`, by
/// tabs, a line each.
pub fn parse_events(text: &str) -> Result<Vec<Event>> {
    let bad =
        |line: &str| Error::Device(format!("the profiler wrote an unreadable event: {line:?}"));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.splitn(6, '\t').collect();
            let [device, activity, thread, start, end, name] = f[..] else {
                return Err(bad(line));
            };
            let num = |s: &str| s.parse::<u64>().map_err(|_| bad(line));
            Ok(Event {
                place: if device == "1" {
                    Where::Gpu
                } else {
                    Where::Cpu
                },
                activity: activity.parse().map_err(|_| bad(line))?,
                thread: num(thread)?,
                start_ns: num(start)?,
                end_ns: num(end)?,
                name: name.to_owned(),
            })
        })
        .collect()
}

/// The time of one operation (or kernel) name, over all its calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub place: Where,
    pub calls: usize,
    /// Time inside the operation and not inside an operation it called.
    pub self_ns: u64,
    /// Time inside the operation, callees included.
    pub total_ns: u64,
}

/// Where the time of a recording went.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// By self time, largest first.
    pub rows: Vec<Row>,
    /// From the first event's start to the last one's end.
    pub wall_ns: u64,
    /// Sum of the host threads' outermost operations.
    pub cpu_busy_ns: u64,
    /// Time in which at least one GPU kernel, copy or fill ran.
    pub gpu_busy_ns: u64,
}

/// Self and total times per name. Host events nest by time on their thread (an operation
/// and those it called); GPU work does not nest, so its self time is its duration.
pub fn summarize(events: &[Event]) -> Summary {
    let mut rows: HashMap<(String, Where), Row> = HashMap::new();
    let mut add = |e: &Event, self_ns: u64| {
        let row = rows
            .entry((e.name.clone(), e.place))
            .or_insert_with(|| Row {
                name: e.name.clone(),
                place: e.place,
                calls: 0,
                self_ns: 0,
                total_ns: 0,
            });
        row.calls += 1;
        row.self_ns += self_ns;
        row.total_ns += e.duration_ns();
    };
    let mut cpu_busy_ns = 0;
    let mut by_thread: HashMap<u64, Vec<&Event>> = HashMap::new();
    for e in events.iter().filter(|e| e.place == Where::Cpu) {
        by_thread.entry(e.thread).or_default().push(e);
    }
    for mut list in by_thread.into_values() {
        // Outer before inner: by start, the longer first.
        list.sort_by_key(|e| (e.start_ns, std::cmp::Reverse(e.end_ns)));
        let children = child_time(&list);
        for (e, (child_ns, outermost)) in list.iter().zip(children) {
            add(e, e.duration_ns().saturating_sub(child_ns));
            if outermost {
                cpu_busy_ns += e.duration_ns();
            }
        }
    }
    let mut gpu: Vec<&Event> = events.iter().filter(|e| e.is_device_work()).collect();
    for e in &gpu {
        add(e, e.duration_ns());
    }
    gpu.sort_by_key(|e| e.start_ns);
    let gpu_busy_ns = union_ns(&gpu);
    let wall_ns = match (
        events.iter().map(|e| e.start_ns).min(),
        events.iter().map(|e| e.end_ns).max(),
    ) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by(|a, b| b.self_ns.cmp(&a.self_ns).then_with(|| a.name.cmp(&b.name)));
    Summary {
        rows,
        wall_ns,
        cpu_busy_ns,
        gpu_busy_ns,
    }
}

/// For each event of one thread (sorted outer first), the time of its direct callees and
/// whether it is outermost. An event that starts inside another and ends after it is
/// treated as its callee up to the caller's end.
fn child_time(list: &[&Event]) -> Vec<(u64, bool)> {
    let mut out = vec![(0u64, false); list.len()];
    let mut stack: Vec<usize> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        while let Some(&top) = stack.last() {
            if list[top].end_ns <= e.start_ns {
                stack.pop();
            } else {
                break;
            }
        }
        match stack.last() {
            Some(&parent) => {
                let inside = e.end_ns.min(list[parent].end_ns).saturating_sub(e.start_ns);
                out[parent].0 += inside;
            }
            None => out[i].1 = true,
        }
        stack.push(i);
    }
    out
}

/// Time covered by at least one of `spans` (sorted by start).
fn union_ns(spans: &[&Event]) -> u64 {
    let mut total = 0;
    let mut current: Option<(u64, u64)> = None;
    for e in spans {
        current = match current {
            Some((a, b)) if e.start_ns <= b => Some((a, b.max(e.end_ns))),
            Some((a, b)) => {
                total += b - a;
                Some((e.start_ns, e.end_ns))
            }
            None => Some((e.start_ns, e.end_ns)),
        };
    }
    total + current.map_or(0, |(a, b)| b.saturating_sub(a))
}

impl Summary {
    /// The table `bench --profile` prints: the `top` names by self time, in milliseconds
    /// per step over `steps` steps, then the busy times.
    pub fn table(&self, steps: usize, top: usize) -> String {
        let per = |ns: u64| ns as f64 / 1e6 / steps.max(1) as f64;
        let self_on = |place: Where| -> u64 {
            self.rows
                .iter()
                .filter(|r| r.place == place)
                .map(|r| r.self_ns)
                .sum()
        };
        let (cpu_self, gpu_self) = (self_on(Where::Cpu), self_on(Where::Gpu));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>10} {:>6} {:>10} {:>10}  operation (per step; share of its device's self time)",
            "self ms", "share", "calls", "total ms"
        );
        for r in self.rows.iter().take(top) {
            let of = match r.place {
                Where::Cpu => cpu_self,
                Where::Gpu => gpu_self,
            };
            let _ = writeln!(
                out,
                "{:>10.3} {:>5.1}% {:>10.1} {:>10.3}  {}{}",
                per(r.self_ns),
                100.0 * r.self_ns as f64 / of.max(1) as f64,
                r.calls as f64 / steps.max(1) as f64,
                per(r.total_ns),
                if r.place == Where::Gpu { "[gpu] " } else { "" },
                r.name
            );
        }
        let _ = writeln!(
            out,
            "per step: wall {:.3} ms, host operations {:.3} ms{}",
            per(self.wall_ns),
            per(self.cpu_busy_ns),
            if self.gpu_busy_ns > 0 {
                format!(
                    ", GPU busy {:.3} ms ({:.1}% of the wall time; the rest is gaps between kernels)",
                    per(self.gpu_busy_ns),
                    100.0 * self.gpu_busy_ns as f64 / self.wall_ns.max(1) as f64
                )
            } else {
                String::new()
            }
        );
        out
    }
}

unsafe extern "C" {
    fn ibvae_profiler_start(cuda: bool) -> *mut c_char;
    fn ibvae_profiler_stop(trace_path: *const c_char, events: *mut *mut c_char) -> *mut c_char;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn cpu(name: &str, thread: u64, start_ns: u64, end_ns: u64) -> Event {
        Event {
            place: Where::Cpu,
            activity: 0,
            thread,
            start_ns,
            end_ns,
            name: name.into(),
        }
    }

    fn row<'a>(s: &'a Summary, name: &str) -> &'a Row {
        s.rows.iter().find(|r| r.name == name).unwrap()
    }

    /// Self times by hand: a call tree on one thread, a second thread, two GPU kernels that
    /// overlap and one apart.
    #[test]
    fn self_time_is_total_minus_direct_callees() {
        let mut events = vec![
            cpu("step", 1, 0, 100),
            cpu("conv", 1, 10, 50),
            cpu("mm", 1, 20, 30),
            cpu("add", 1, 30, 45),
            cpu("conv", 1, 60, 90),
            cpu("mm", 1, 60, 70),
            cpu("other", 2, 5, 25),
        ];
        for (start, end) in [(0, 40), (30, 50), (80, 100)] {
            events.push(Event {
                place: Where::Gpu,
                activity: GPU_KERNEL,
                thread: 7,
                start_ns: start,
                end_ns: end,
                name: "kernel".into(),
            });
        }
        let s = summarize(&events);
        assert_eq!(row(&s, "step").self_ns, 100 - 40 - 30);
        let conv = row(&s, "conv");
        assert_eq!(
            (conv.calls, conv.self_ns, conv.total_ns),
            (2, 40 - 25 + 30 - 10, 70)
        );
        assert_eq!(row(&s, "mm").self_ns, 20);
        assert_eq!(row(&s, "add").self_ns, 15);
        assert_eq!(row(&s, "other").self_ns, 20);
        assert_eq!(s.cpu_busy_ns, 100 + 20);
        let k = row(&s, "kernel");
        assert_eq!((k.place, k.calls, k.self_ns), (Where::Gpu, 3, 40 + 20 + 20));
        assert_eq!(s.gpu_busy_ns, 50 + 20);
        assert_eq!(s.wall_ns, 100);
        assert_eq!(s.rows[0].name, "kernel");
        // On each thread the self times add up to the outermost operations' time.
        let total_self: u64 = s
            .rows
            .iter()
            .filter(|r| r.place == Where::Cpu)
            .map(|r| r.self_ns)
            .sum();
        assert_eq!(total_self, s.cpu_busy_ns);
        let table = s.table(2, 3);
        assert!(table.contains("[gpu] kernel"), "{table}");
        assert!(table.contains("wall 0.000 ms"), "{table}");
    }

    #[test]
    fn unreadable_event_lines_are_errors() {
        let ok = parse_events("0\t0\t3\t10\t20\taten::add\tx\n1\t5\t9\t1\t2\tk\n").unwrap();
        assert_eq!(ok[0].name, "aten::add\tx");
        assert_eq!(ok[1].place, Where::Gpu);
        for bad in ["0\t0\t3\t10\n", "0\tx\t3\t10\t20\tn", "0\t0\t3\t-1\t20\tn"] {
            assert!(parse_events(bad).is_err(), "{bad:?}");
        }
    }

    /// LibTorch's profiler records the operations of this thread, with the callee inside
    /// its caller, and writes a Chrome trace.
    #[test]
    fn records_operations_and_writes_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace.json");
        let a = Tensor::randn([64, 64], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let profiler = Profiler::start(Device::Cpu).unwrap();
        let loss = a.matmul(&a).relu().sum(Kind::Float);
        loss.backward();
        let events = profiler.finish(Some(&trace)).unwrap();
        let s = summarize(&events);
        let mm = s.rows.iter().find(|r| r.name == "aten::mm").unwrap();
        assert!(
            mm.calls >= 3 && mm.self_ns > 0 && mm.self_ns <= mm.total_ns,
            "{mm:?}"
        );
        assert!(s.rows.iter().any(|r| r.name == "aten::relu"));
        assert!(s.cpu_busy_ns > 0 && s.cpu_busy_ns <= s.wall_ns);
        let text = std::fs::read_to_string(&trace).unwrap();
        assert!(text.contains("traceEvents") && text.contains("aten::mm"));
        // Dropped unfinished, a recording stops: a new one starts.
        drop(Profiler::start(Device::Cpu).unwrap());
        let again = Profiler::start(Device::Cpu).unwrap();
        let _ = a.relu();
        assert!(
            again
                .finish(None)
                .unwrap()
                .iter()
                .any(|e| e.name == "aten::relu")
        );
    }
}
