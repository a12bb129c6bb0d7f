// Pseudo-terminal pairs made by socat, for serial tests: the benches' helper (stopped by socat's own PID).
export { ptyPair, type PtyPair } from '../../bench/lib/pty.ts'
