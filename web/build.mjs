// Bundles src/main.ts into dist/app.js (minified, one file) and copies the
// page's static files; `make web` runs it after `buf generate`.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: "dist/app.js",
  legalComments: "none",
  logLevel: "warning",
});
for (const name of ["index.html", "app.css"]) {
  copyFileSync(`static/${name}`, `dist/${name}`);
}
