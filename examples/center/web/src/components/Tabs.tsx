// The main panel's tabs; each one is a link, so the tab is part of the URL.

export interface Tab {
  id: string;
  label: string;
  href: string;
}

export function Tabs({ tabs, active }: { tabs: Tab[]; active: string }) {
  return (
    <nav class="tabs" role="tablist">
      {tabs.map((t) => (
        <a key={t.id} href={t.href} role="tab" aria-selected={t.id === active} class={t.id === active ? "tab active" : "tab"} data-tab={t.id}>
          {t.label}
        </a>
      ))}
    </nav>
  );
}
