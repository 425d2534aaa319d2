/**
 * The folder graph of issue 18, checked by `npm run lint:deps` (scripts/test.sh runs it before the
 * tests). Layers bottom to top; a folder may import only from layers below its own, never from a
 * sibling in its layer, and never from above. fuse-store/ is native and outside the TS graph; test/
 * may reach into any layer's files and is not checked.
 */
const LAYERS = [
  ['errors'], // the shared error base
  ['policy'],
  ['link'],
  ['fusefs', 'engine'],
  ['manager', 'agent', 'controller'],
  ['node'], // the composition of `ephemera node`, with the volume driver and the CSI plugin
  // The CLI registers every layer's commands, `ephemera bench` too: bench sits below it.
  ['bench'],
  ['cli'],
];

const ALL = LAYERS.flat();
const any = (folders) => `^(${folders.join('|')})/`;

/** One rule per folder: nothing from its siblings or from any higher layer. */
const layerRules = LAYERS.flatMap((layer, rank) => {
  const above = LAYERS.slice(rank + 1).flat();
  return layer.map((folder) => {
    const forbidden = [...layer.filter((f) => f !== folder), ...above];
    return {
      name: `layer-${folder}`,
      comment: `${folder}/ may import only from ${LAYERS.slice(0, rank).flat().join(', ') || 'no other folder'}`,
      severity: 'error',
      from: { path: `^${folder}/` },
      to: { path: forbidden.length > 0 ? any(forbidden) : '^$' },
    };
  });
});

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'no-unlayered-folder',
      comment: 'every TS folder has a place in LAYERS',
      severity: 'error',
      from: { path: any(ALL) },
      to: { dependencyTypes: ['local'], pathNot: any(ALL) },
    },
    {
      name: 'no-circular',
      comment: 'no import cycle between files (type-only imports included)',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-folder-cycle',
      comment: 'no import cycle between folders (a folder counts the files of its subfolders)',
      severity: 'error',
      scope: 'folder',
      from: {},
      to: { circular: true },
    },
    // Another folder is reached through its index.ts. A file may import the files of its own folder
    // and, from a subfolder, those of its parent folder (fusefs/daemon/ uses fusefs/native.ts).
    {
      name: 'through-index',
      comment: 'import another folder through its index.ts',
      severity: 'error',
      from: { path: '^([^/]+)/[^/]+$' },
      to: { dependencyTypes: ['local'], pathNot: ['^$1/[^/]+$', '/index\\.ts$'] },
    },
    {
      name: 'through-index-sub',
      comment: 'import another folder through its index.ts',
      severity: 'error',
      from: { path: '^([^/]+)/([^/]+)/[^/]+$' },
      to: { dependencyTypes: ['local'], pathNot: ['^$1/$2/[^/]+$', '^$1/[^/]+$', '/index\\.ts$'] },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // TypeScript 7 has no JS compiler API for dependency-cruiser; swc parses the sources and keeps
    // `import type` and `export type … from`, so type-only imports are checked like the others.
    parser: 'swc',
    tsPreCompilationDeps: true,
    includeOnly: any(ALL),
    exclude: { path: '^(node_modules|dist|fuse-store|test)/' },
    doNotFollow: { path: 'node_modules' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
  },
};
