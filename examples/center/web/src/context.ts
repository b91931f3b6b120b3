// What every view gets from the shell.

import type { EventLog } from "./live/events";
import type { LoadedInventory } from "./live/inventory";

export interface ViewContext {
  inventory: LoadedInventory;
  events: EventLog;
  tab: string;
  /** The user's role allows operations (power, migrate…) / settings. */
  canOperate: boolean;
  isAdmin: boolean;
  /** Changes when a task ends (views that show what tasks change read again on it). */
  tasksEnded: string;
  /** Read tasks and the inventory again now (after starting an action). */
  refresh: () => void;
}
