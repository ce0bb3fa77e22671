/*
 * replay.pml — a Promela model of the anti-replay window (src/ingest/replay.c) and its
 * durable state (issue 5), checked by spin in `make test` (tests/model/run.sh).
 *
 * Frames arrive with any counter, in any order, any number of times (duplicates,
 * reorderings within and beyond the window). The server checks the counter against its
 * in-memory window; a new one is appended to the durable log (the points and the counter
 * in one record) and only then accepted into the window. The machine may crash at any
 * step: the in-memory window is lost and recovery rebuilds it by replaying the log's
 * counters in log order, as stele_replay_accept does.
 *
 * Safety property: no counter ever enters the durable log twice — across crashes and
 * restarts, a counter is accepted at most once. Small bounds (counters 1..N, window W)
 * keep the state space exhaustive. Compiled with -DBUG (recovery that forgets the log)
 * the assertion must fail: the check has teeth (run.sh verifies both).
 */
#define N 6 /* counters 1..N */
#define W 3 /* window size */

byte top;
bool any;
bool seen[W]; /* seen[i]: counter top - i accepted */
byte logc[N + 1];
byte nlog;
byte count[N + 1]; /* times a counter entered the durable log */

/* verdict: 0 new, 1 duplicate, 2 stale */
inline check(c, verdict)
{
    if
    :: !any || c > top -> verdict = 0
    :: else ->
        if
        :: top - c >= W -> verdict = 2
        :: else ->
            if
            :: seen[top - c] -> verdict = 1
            :: else -> verdict = 0
            fi
        fi
    fi
}

inline accept(c)
{
    if
    :: !any ->
        any = true;
        top = c;
        i = 0;
        do
        :: i < W -> seen[i] = false; i++
        :: else -> break
        od;
        seen[0] = true
    :: else ->
        if
        :: c > top ->
            d = c - top;
            i = W;
            do
            :: i > 0 ->
                i--;
                if
                :: i >= d -> seen[i] = seen[i - d]
                :: else -> seen[i] = false
                fi
            :: else -> break
            od;
            top = c;
            seen[0] = true
        :: else -> seen[top - c] = true
        fi
    fi
}

inline recover()
{
    any = false;
    top = 0;
#ifndef BUG
    k = 0;
    do
    :: k < nlog ->
        c = logc[k];
        check(c, v);
        if
        :: v == 0 -> accept(c)
        :: else -> skip
        fi;
        k++
    :: else -> break
    od
#endif
}

active proctype server()
{
    byte c, v, i, d, k;
    do
    :: select(c : 1 .. N);
        check(c, v);
        if
        :: v == 0 ->
            if
            :: true -> /* the record (points + counter) becomes durable */
                assert(count[c] == 0);
                count[c]++;
                logc[nlog] = c;
                nlog++;
                if
                :: true -> accept(c) /* then the window; the frame is acknowledged */
                :: true -> recover() /* crash between the log and the window */
                fi
            :: true -> recover() /* crash before the record is durable */
            fi
        :: else -> skip /* duplicate (a success, nothing changes) or stale */
        fi
    :: recover() /* crash at any other moment */
    od
}
