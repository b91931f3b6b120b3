// The event log (live through the stream): all of it, or the events about one object.

import { Empty } from "../components/Card";
import { dash, dateTime, words } from "../format";
import { isConsoleLine, useEventLog, type EventLog } from "../live/events";

export function EventsTab({ events, target, targets }: { events: EventLog; target?: string; targets?: string[] }) {
  const names = targets ?? (target ? [target] : undefined);
  const about = names ? events.events.filter((e) => (e.target && names.includes(e.target)) || names.some((n) => e.message.includes(n))) : events.events;
  // Guest console lines belong in the Console tab (the center no longer logs them).
  const shown = about.filter((e) => !isConsoleLine(e));
  return (
    <div class="events-tab" data-testid="events">
      <div class="events-head muted">
        {shown.length} event{shown.length === 1 ? "" : "s"}
        {events.state === "live" ? " · updating live" : events.state === "polling" ? " · refreshed every few seconds" : ""}
      </div>
      {shown.length === 0 ? (
        <Empty>No events yet.</Empty>
      ) : (
        <table class="grid">
          <thead>
            <tr>
              <th style={{ width: "150px" }}>Time</th>
              <th style={{ width: "80px" }}>Severity</th>
              <th>Description</th>
              <th>Type</th>
              <th>Target</th>
              <th>User</th>
            </tr>
          </thead>
          <tbody>
            {shown.slice(0, 200).map((e) => (
              <tr key={e.id} data-event={e.kind}>
                <td>{dateTime(e.time)}</td>
                <td>
                  <span class={`sev sev-${e.severity}`}>{words(e.severity)}</span>
                </td>
                <td>{e.message}</td>
                <td class="muted">{e.kind}</td>
                <td>{e.target ?? dash}</td>
                <td>{e.user ?? dash}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** One object's events from its own stream (`?target=`): its whole history, not only what
 * the shared log still holds. */
export function TargetEvents({ target }: { target: string }) {
  const log = useEventLog(true, target);
  return <EventsTab events={log} target={target} />;
}
