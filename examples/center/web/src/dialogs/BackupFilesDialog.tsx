// Browses the guest filesystem inside a backup (read by a host straight out of the
// repository, `GET /api/vinfra/backup/files`) and downloads single files, or a folder as
// a tar (`GET /api/vinfra/backup/file`); "Find" searches the folder shown and everything
// below it by name (a glob, `find=`). Downloads are plain links: the browser sends the
// session cookie with a GET and saves the attachment as it streams.

import { useEffect, useState } from "preact/hooks";
import { enc, get } from "../api";
import { Empty, ErrorNote } from "../components/Card";
import { FileIcon, FolderIcon } from "../components/Icons";
import { bytes, dash, dateTime } from "../format";
import type { Backup } from "../views/backupJobs";

interface Entry {
  name: string;
  kind: string;
  size: number;
  mtime?: Date;
}

interface Listing {
  fs: string;
  partition: number;
  disk: string;
  path: string;
  entries: Entry[];
  truncated: boolean;
}

const str = (v: unknown) => (typeof v === "string" ? v : "");
const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0);

function readListing(v: unknown): Listing {
  const o = (v && typeof v === "object" ? v : {}) as Record<string, unknown>;
  const entries = (Array.isArray(o.entries) ? o.entries : []).map((x) => {
    const e = (x && typeof x === "object" ? x : {}) as Record<string, unknown>;
    const t = typeof e.mtime_unix_s === "number" ? e.mtime_unix_s : undefined;
    return { name: str(e.name), kind: str(e.kind), size: num(e.size), mtime: t === undefined ? undefined : new Date(t * 1000) };
  });
  // Folders first, then by name (the server sorts so too; a defensive copy).
  entries.sort((a, b) => Number(a.kind !== "dir") - Number(b.kind !== "dir") || a.name.localeCompare(b.name));
  return { fs: str(o.fs), partition: num(o.partition), disk: str(o.disk), path: str(o.path) || "/", entries, truncated: o.truncated === true };
}

const join = (dir: string, name: string) => (dir === "/" ? `/${name}` : `${dir}/${name}`);

export function BackupFilesDialog({
  vm,
  repository,
  backup,
  canDownload,
  onClose,
}: {
  vm: string;
  repository: string;
  backup: Backup;
  canDownload: boolean;
  onClose: () => void;
}) {
  const [disk, setDisk] = useState(0);
  const [partition, setPartition] = useState("");
  const [path, setPath] = useState("/");
  const [listing, setListing] = useState<Listing | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [loading, setLoading] = useState(false);
  const [findText, setFindText] = useState("");
  /** The search shown (a glob), or none: the folder's own entries. */
  const [find, setFind] = useState<string | undefined>(undefined);
  const open = (p: string) => {
    setFind(undefined);
    setPath(p);
  };

  const query = (p: string) =>
    `repository=${enc(repository)}&backup=${enc(backup.id)}&vm=${enc(vm)}&disk=${disk}&path=${enc(p)}` +
    (partition.trim() ? `&partition=${enc(partition.trim())}` : "");
  const fileUrl = (p: string, tar: boolean) => `/api/vinfra/backup/file?${query(p)}${tar ? "&format=tar" : ""}`;

  useEffect(() => {
    let live = true;
    setLoading(true);
    setError(undefined);
    get(`/api/vinfra/backup/files?${query(path)}${find ? `&find=${enc(find)}` : ""}`)
      .then((v) => live && setListing(readListing(v)))
      .catch((e) => {
        if (!live) return;
        setListing(undefined);
        setError(e instanceof Error ? e.message : String(e));
      })
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [path, disk, partition, find]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [onClose]);

  const parts = path.split("/").filter(Boolean);
  const noDownload = canDownload ? undefined : "Your role (read-only) cannot download files out of backups";
  const download = (p: string, tar: boolean, label: string, title: string) =>
    canDownload ? (
      <a class="button small" href={fileUrl(p, tar)} download title={title} data-action={tar ? "download-tar" : "download"}>
        {label}
      </a>
    ) : (
      <button type="button" class="button small" disabled title={noDownload}>
        {label}
      </button>
    );

  return (
    <div class="modal-backdrop" role="dialog" aria-modal="true" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div class="modal wide" aria-label={`Files of backup ${backup.id.slice(0, 12)}`} data-testid="backup-files">
        <header class="modal-head">
          <h2>
            Files of {vm} — backup {backup.id.slice(0, 12)}
          </h2>
          <button type="button" class="icon-button" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </header>
        <div class="modal-body">
          <p class="muted">
            Taken {backup.time ? dateTime(backup.time) : "at an unknown time"}, read straight out of {repository}
            {listing ? ` · ${listing.fs} on ${listing.disk}, partition ${listing.partition}` : ""}.
          </p>
          <div class="inline-form">
            {backup.disks.length > 1 && (
              <>
                <span class="muted">Disk</span>
                <select
                  value={String(disk)}
                  data-field="disk"
                  onChange={(e) => {
                    setDisk(Number((e.target as HTMLSelectElement).value));
                    open("/");
                  }}
                >
                  {backup.disks.map((d, i) => (
                    <option key={d} value={String(i)}>
                      {d}
                    </option>
                  ))}
                </select>
              </>
            )}
            <span class="muted">Partition</span>
            <input
              class="narrow"
              style={{ width: "72px", flex: "0 0 72px" }}
              placeholder="auto"
              value={partition}
              data-field="partition"
              onChange={(e) => {
                setPartition((e.target as HTMLInputElement).value);
                open("/");
              }}
            />
            <span class="spacer" />
            {download(path, true, "Download folder as .tar", `${path} and everything below it, as a tar archive`)}
          </div>
          <form
            class="inline-form"
            data-testid="backup-find"
            onSubmit={(e) => {
              e.preventDefault();
              setFind(findText.trim() || undefined);
            }}
          >
            <input
              placeholder="Find by name below this folder: *.conf, host?, /etc/*.d/*"
              value={findText}
              data-field="find"
              onInput={(e) => setFindText((e.target as HTMLInputElement).value)}
            />
            <button class="button small" type="submit" data-action="find">
              Find
            </button>
            {find && (
              <button
                class="button small"
                type="button"
                onClick={() => {
                  setFind(undefined);
                  setFindText("");
                }}
              >
                Clear
              </button>
            )}
          </form>
          <nav class="crumbs" aria-label="Path" data-testid="crumbs">
            <button type="button" class="crumb" onClick={() => open("/")}>
              /
            </button>
            {parts.map((p, i) => (
              <span key={i}>
                {i > 0 && <span class="muted"> / </span>}
                <button type="button" class="crumb" onClick={() => open(`/${parts.slice(0, i + 1).join("/")}`)}>
                  {p}
                </button>
              </span>
            ))}
            {find && <span class="muted" data-testid="find-shown"> · matches of “{find}” below this folder</span>}
          </nav>
          <ErrorNote message={error} />
          {loading && !listing && <Empty>Reading the backup…</Empty>}
          {listing && listing.entries.length === 0 && !error && <Empty>{find ? `Nothing below ${listing.path} matches “${find}”.` : "This folder is empty."}</Empty>}
          {listing && listing.entries.length > 0 && !error && (
            <div class="files-scroll">
              <table class="grid compact" data-testid="backup-file-list">
                <thead>
                  <tr>
                    <th>Name</th>
                    <th class="num">Size</th>
                    <th>Modified</th>
                    <th />
                  </tr>
                </thead>
                <tbody>
                  {listing.entries.map((e) => (
                    <tr key={e.name} data-entry={e.name} data-kind={e.kind}>
                      <td>
                        {e.kind === "dir" ? (
                          <button type="button" class="crumb file-name" onClick={() => open(join(listing.path, e.name))}>
                            <FolderIcon /> {e.name}
                          </button>
                        ) : (
                          <span class="file-name">
                            <FileIcon title={e.kind === "symlink" ? "symbolic link" : undefined} /> {e.name}
                            {e.kind === "symlink" && <span class="muted"> (link)</span>}
                          </span>
                        )}
                      </td>
                      <td class="num">{e.kind === "dir" ? dash : bytes(e.size)}</td>
                      <td>{e.mtime ? dateTime(e.mtime) : dash}</td>
                      <td class="row-actions">
                        {e.kind === "file" && download(join(listing.path, e.name), false, "Download", `Download ${join(listing.path, e.name)}`)}
                        {e.kind === "dir" && download(join(listing.path, e.name), true, ".tar", `${e.name} as a tar archive`)}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {listing?.truncated && <p class="muted">Only the first {listing.entries.length} entries are shown.</p>}
        </div>
        <footer class="modal-foot">
          <button type="button" class="button" onClick={onClose}>
            Close
          </button>
        </footer>
      </div>
    </div>
  );
}
