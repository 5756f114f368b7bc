package auditlog.flink;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Hands the ingest job's Python sequencer a log's records in batches: one call into Python per
 * batch instead of one per record (pipelines/ingest.py, docs/design.md §11).
 *
 * <p>In: (state key, (partition, offset, timestamp ms, key, value, service signature)) rows, keyed
 * by state key. Out: (state key, (partition, frame)) rows, where the frame is the partition's
 * records in arrival order, each as offset (int64), timestamp (int64), then key, value and
 * signature as an int32 length (-1 for null) and that many bytes, all big-endian
 * (pipelines/batches.py reads it).
 *
 * <p>Batches live in this operator's memory only, never in state: every one is emitted before a
 * checkpoint barrier leaves the operator (prepareSnapshotPreBarrier), before any watermark, and at
 * the end of input, so a checkpoint never holds a record this operator has taken and not passed
 * on. A batch is emitted when it holds maxRecords records or maxBytes bytes, or lingerMs after its
 * first record. The order of each partition's records is kept, and so the blocks the sequencer
 * cuts are the same however the records were batched.
 *
 * <p>Before each checkpoint barrier, after the batches, it also emits one batch with an empty frame
 * (a real batch is never empty): the barrier marker. The sequencer, chained after this operator,
 * handles it before the barrier reaches it, and waits there until every block it has sealed is in
 * the archive, so a checkpoint never completes ahead of its blocks.
 */
public final class RecordBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {

    private static final long serialVersionUID = 1L;

    private final int maxRecords;
    private final int maxBytes;
    private final long lingerMs;

    private transient Map<Integer, Batch> open;
    private transient boolean timerSet;
    private transient Row lastSeen; // (state key, partition) of the latest record: where the barrier marker goes
    private static final byte[] MARKER = new byte[0];

    public RecordBatcher(int maxRecords, int maxBytes, long lingerMs) {
        if (maxRecords < 1 || maxBytes < 1 || lingerMs < 0) {
            throw new IllegalArgumentException(
                    "RecordBatcher needs maxRecords >= 1, maxBytes >= 1 and lingerMs >= 0, got "
                            + maxRecords + ", " + maxBytes + ", " + lingerMs);
        }
        this.maxRecords = maxRecords;
        this.maxBytes = maxBytes;
        this.lingerMs = lingerMs;
    }

    private static final class Batch {
        final Object stateKey;
        final int partition;
        final ByteArrayOutputStream bytes = new ByteArrayOutputStream(64 * 1024);
        final DataOutputStream out = new DataOutputStream(bytes);
        int records;

        Batch(Object stateKey, int partition) {
            this.stateKey = stateKey;
            this.partition = partition;
        }
    }

    @Override
    public void open() throws Exception {
        super.open();
        open = new LinkedHashMap<>();
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        Row record = (Row) row.getField(1);
        int partition = (Integer) record.getField(0);
        Batch batch = open.get(partition);
        if (batch == null) {
            batch = new Batch(row.getField(0), partition);
            lastSeen = Row.of(batch.stateKey, partition);
            open.put(partition, batch);
            if (!timerSet && lingerMs > 0) {
                timerSet = true;
                long now = getProcessingTimeService().getCurrentProcessingTime();
                getProcessingTimeService().registerTimer(now + lingerMs, this::onLinger);
            }
        }
        DataOutputStream out = batch.out;
        out.writeLong((Long) record.getField(1));
        out.writeLong((Long) record.getField(2));
        writeBytes(out, (byte[]) record.getField(3));
        writeBytes(out, (byte[]) record.getField(4));
        writeBytes(out, (byte[]) record.getField(5));
        batch.records++;
        if (batch.records >= maxRecords || batch.bytes.size() >= maxBytes || lingerMs == 0) {
            open.remove(partition);
            emit(batch);
        }
    }

    private static void writeBytes(DataOutputStream out, byte[] value) throws IOException {
        if (value == null) {
            out.writeInt(-1);
        } else {
            out.writeInt(value.length);
            out.write(value);
        }
    }

    private void onLinger(long time) throws Exception {
        timerSet = false;
        emitAll();
    }

    private void emit(Batch batch) {
        output.collect(new StreamRecord<>(Row.of(batch.stateKey, Row.of(batch.partition, batch.bytes.toByteArray()))));
    }

    private void emitAll() {
        if (open.isEmpty()) {
            return;
        }
        for (Batch batch : open.values()) {
            emit(batch);
        }
        open.clear();
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        emitAll();
        if (lastSeen != null) {
            output.collect(new StreamRecord<>(Row.of(lastSeen.getField(0), Row.of(lastSeen.getField(1), MARKER))));
        }
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        emitAll();
        super.processWatermark(mark);
    }

    @Override
    public void endInput() throws Exception {
        emitAll();
    }

    @Override
    public void finish() throws Exception {
        emitAll();
        super.finish();
    }
}
