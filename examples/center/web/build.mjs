// Bundles the console into dist/: index.html, app.js (one bundle) and app.css (our
// styles plus uPlot's and xterm's, imported from src/main.tsx). `--watch` rebuilds on change.
import { build, context } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const watch = process.argv.includes("--watch");
const options = {
  entryPoints: { app: "src/main.tsx" },
  bundle: true,
  format: "iife",
  target: "es2022",
  outdir: "dist",
  minify: !watch,
  sourcemap: watch ? "inline" : false,
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "eof",
  logLevel: "info",
};

await rm("dist", { recursive: true, force: true });
await mkdir("dist", { recursive: true });
await copyFile("index.html", "dist/index.html");
if (watch) {
  const ctx = await context(options);
  await ctx.watch();
} else {
  await build(options);
}
