/** Public surface of the bench layer. */
export { BenchError } from './errors';
export { registerBenchCommands } from './commands';
