package auditlog.flink;

import java.util.List;

import org.apache.flink.api.common.state.MapState;

/**
 * Answers the ingest sequencer's dedupe lookups a batch at a time: one call from Python into the
 * JVM for a batch's event keys instead of one per record (pipelines/ingest_core.py BlockDedupe,
 * pipelines/ingest_operators.py batch_lookup).
 *
 * <p>The Python side hands over its keyed map state's Java object, set to the key (the log) the
 * task is processing, and the batch's keys; the answer is, for each key, whether the state holds
 * it, read with MapState.contains as the per-record calls read it (time-to-live included).
 */
public final class SeenKeys {

    public SeenKeys() {}

    @SuppressWarnings("unchecked")
    public boolean[] contains(Object state, List<?> keys) throws Exception {
        MapState<Object, ?> map = (MapState<Object, ?>) state;
        boolean[] found = new boolean[keys.size()];
        for (int i = 0; i < found.length; i++) {
            found[i] = map.contains(keys.get(i));
        }
        return found;
    }
}
