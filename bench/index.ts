/** Public surface of the bench layer. */
export { BASELINE_TARGETS, TARGETS, suiteSignal, throwIfAborted } from './frame';
export type { BenchResult, ProgressTick, Suite, SuiteOptions, TargetFailure, TargetName } from './frame';
export { BenchError } from './errors';
export { HOST_TARGETS, setupHostTarget, createRunDir, removeRunDir, readRssKiB } from './host-targets';
export type { HostTarget, HostTargetName, TeardownReport } from './host-targets';
export { median, ratio, summarize, renderTable, toJsonDocument } from './summary';
export type { BenchJsonDocument, SummaryRow } from './summary';
export { headline, headlineOfDocs, renderHeadline } from './headline';
export type { Headline } from './headline';
export { runBench } from './runner';
export type { BenchRunOptions, BenchRunOutcome } from './runner';
export { renderReportHtml, writeReport } from './report';
export { SUITES, findSuite } from './suites';
export { registerBenchCommands } from './commands';
