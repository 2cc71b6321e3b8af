//! A container's `awslogs` output: its log stream (`PREFIX/CONTAINER/TASK`
//! in `awslogs-group`, the group made first if `awslogs-create-group` is
//! true), and the sink that turns what the guest writes into one event per
//! line. A container's last line may lack a newline: it is written when the
//! container ends ([`LineSink::flush`]).

use skiff_channel::logs::{LogDestination, OpenStreamError};
use skiff_channel::taskdef::ContainerDefinition;
use std::sync::{Arc, Mutex};

/// Opens container `c`'s log stream, if it logs with awslogs.
pub(crate) fn provision(
    logs: &Arc<dyn LogDestination>,
    c: &ContainerDefinition,
    task_id: &str,
) -> Result<Option<Arc<LineSink>>, String> {
    let Some(log) = &c.log_configuration else {
        return Ok(None);
    };
    let group = log
        .options
        .get("awslogs-group")
        .cloned()
        .unwrap_or_default();
    let create = log
        .options
        .get("awslogs-create-group")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let stream = match log.options.get("awslogs-stream-prefix") {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}/{}/{task_id}", c.name),
        _ => format!("{}/{task_id}", c.name),
    };
    logs.open_stream(&group, &stream, create)
        .map_err(|e| match e {
            OpenStreamError::InvalidGroupName(why) => format!("CannotStartContainerError: {why}"),
            OpenStreamError::NoSuchGroup(group) => format!(
                "CannotStartContainerError: log group {group} does not exist (create it, or set awslogs-create-group to true)"
            ),
            OpenStreamError::Failed(why) => why,
        })?;
    Ok(Some(Arc::new(LineSink::new(
        Arc::clone(logs),
        group,
        stream,
    ))))
}

/// Milliseconds since the epoch, as CloudWatch stamps events.
fn millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A guest's output as log events: one per line (`\r\n` or `\n`). Empty
/// lines are left out, as Docker's awslogs driver leaves them out:
/// CloudWatch Logs refuses an empty message, and with it the whole batch.
pub(crate) struct LineSink {
    logs: Arc<dyn LogDestination>,
    group: String,
    stream: String,
    partial: Mutex<Vec<u8>>,
}

impl LineSink {
    /// Writes to `group`/`stream`, which must exist.
    pub(crate) fn new(logs: Arc<dyn LogDestination>, group: String, stream: String) -> LineSink {
        LineSink {
            logs,
            group,
            stream,
            partial: Mutex::new(Vec::new()),
        }
    }

    /// Writes a last line that had no newline.
    pub(crate) fn flush(&self) {
        let rest = match self.partial.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        if !rest.is_empty() {
            let line = String::from_utf8_lossy(&rest).into_owned();
            if let Err(e) = self
                .logs
                .put_events(&self.group, &self.stream, &[(millis(), line)])
            {
                tracing::warn!(group = %self.group, stream = %self.stream, "cannot store log events: {e}");
            }
        }
    }
}

/// Lines longer than this are split (CloudWatch's event limit is 256 KiB).
const MAX_LINE: usize = 256 * 1024 - 26;

impl skiff_runtime::OutputSink for LineSink {
    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let ts = millis();
        let mut events = Vec::new();
        {
            let mut partial = self
                .partial
                .lock()
                .map_err(|_| std::io::Error::other("log sink lock poisoned"))?;
            partial.extend_from_slice(bytes);
            let mut start = 0;
            while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
                let line = &partial[start..start + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.is_empty() {
                    events.push((ts, String::from_utf8_lossy(line).into_owned()));
                }
                start += nl + 1;
            }
            partial.drain(..start);
            while partial.len() >= MAX_LINE {
                let chunk: Vec<u8> = partial.drain(..MAX_LINE).collect();
                events.push((ts, String::from_utf8_lossy(&chunk).into_owned()));
            }
        }
        // Lines CloudWatch Logs would not take (or a control plane that is
        // away) cost the lines, not the container: its write succeeds.
        if !events.is_empty()
            && let Err(e) = self.logs.put_events(&self.group, &self.stream, &events)
        {
            tracing::warn!(
                group = %self.group,
                stream = %self.stream,
                lines = events.len(),
                "cannot store log events, dropped: {e}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::OutputSink;

    /// The events each stream was sent, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String, String)>>);

    impl LogDestination for Recorded {
        fn open_stream(&self, _: &str, _: &str, _: bool) -> Result<(), OpenStreamError> {
            Ok(())
        }
        fn put_events(
            &self,
            group: &str,
            stream: &str,
            events: &[(i64, String)],
        ) -> Result<(), String> {
            let mut r = self.0.lock().unwrap();
            for (_, m) in events {
                r.push((group.into(), stream.into(), m.clone()));
            }
            Ok(())
        }
    }

    /// A destination that takes nothing.
    struct Refusing;

    impl LogDestination for Refusing {
        fn open_stream(&self, _: &str, _: &str, _: bool) -> Result<(), OpenStreamError> {
            Ok(())
        }
        fn put_events(&self, _: &str, _: &str, _: &[(i64, String)]) -> Result<(), String> {
            Err("the control plane is away".into())
        }
    }

    #[test]
    fn lines_the_destination_refuses_cost_the_lines_not_the_write() {
        let sink = LineSink::new(Arc::new(Refusing), "/g".into(), "s".into());
        sink.write(b"one\ntwo\n")
            .expect("the guest's write succeeds");
        sink.flush();
    }

    #[test]
    fn lines_become_events() {
        let recorded = Arc::new(Recorded::default());
        let logs: Arc<dyn LogDestination> = Arc::clone(&recorded) as _;
        let sink = LineSink::new(logs, "/ecs/job".into(), "app/t1".into());
        sink.write(b"one\ntw").unwrap();
        sink.write(b"o\r\n\r\n\nthree").unwrap();
        sink.flush();
        let msgs: Vec<String> = recorded
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.2.clone())
            .collect();
        assert_eq!(msgs, ["one", "two", "three"]);
        assert!(
            recorded
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|e| e.0 == "/ecs/job" && e.1 == "app/t1")
        );
        // A line longer than CloudWatch takes is split.
        let long = vec![b'x'; MAX_LINE + 10];
        sink.write(&long).unwrap();
        sink.flush();
        let r = recorded.0.lock().unwrap();
        assert_eq!(r[3].2.len(), MAX_LINE);
        assert_eq!(r[4].2.len(), 10);
    }
}
