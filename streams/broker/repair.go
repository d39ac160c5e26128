package broker

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// keepEmptyPartitions makes kfake (the pinned version) load the offsets of
// partitions that retention emptied. kfake reads a partition's snapshot
// (high watermark, log start) only when the partition has segment files;
// one whose every batch was deleted was loaded empty and started again at
// offset 0, while the consumer groups' committed offsets stayed: the next
// messages got offsets below a group's position and were never read. For
// each such partition (a snapshot listing no segment, a high watermark
// above 0, no segment file holding data) this writes one empty segment file
// at the high watermark and lists it in the snapshot, which kfake then
// loads, leaving the partition empty at the offsets it had. It reports what
// it did at INFO and what it could not at WARN; it never fails the start.
func keepEmptyPartitions(dataDir string, log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(dataDir, "partitions", "*"))
	for _, dir := range dirs {
		if err := keepEmptyPartition(dir, log); err != nil {
			log.Warn("embedded broker: could not keep the offsets of an empty partition across the restart; consumers may wait past its end",
				"dir", dir, "err", err)
		}
	}
}

func keepEmptyPartition(dir string, log *slog.Logger) error {
	path := filepath.Join(dir, "snapshot.json")
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var snap map[string]json.RawMessage
	if err := json.Unmarshal(b, &snap); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var segs []json.RawMessage
	if raw, ok := snap["segments"]; ok {
		if err := json.Unmarshal(raw, &segs); err != nil {
			return fmt.Errorf("%s: segments: %w", path, err)
		}
	}
	var hwm, start int64
	if err := json.Unmarshal(snap["high_watermark"], &hwm); err != nil {
		return fmt.Errorf("%s: high_watermark: %w", path, err)
	}
	if raw, ok := snap["log_start_offset"]; ok {
		if err := json.Unmarshal(raw, &start); err != nil {
			return fmt.Errorf("%s: log_start_offset: %w", path, err)
		}
	}
	if len(segs) > 0 || hwm <= 0 || start != hwm {
		return nil // kfake loads it as it is
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var empty []string
	for _, f := range files {
		name := f.Name()
		if !strings.HasSuffix(name, ".dat") && !strings.HasSuffix(name, ".idx") {
			continue
		}
		fi, err := f.Info()
		if err != nil {
			return err
		}
		if fi.Size() > 0 {
			return nil // data the snapshot does not list: kfake replays it
		}
		empty = append(empty, name)
	}
	for _, name := range empty {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	base := strconv.FormatInt(hwm, 10)
	if err := os.WriteFile(filepath.Join(dir, base+".dat"), nil, 0o644); err != nil {
		return err
	}
	snap["segments"] = json.RawMessage(`[{"base_offset":` + base + `,"size":0}]`)
	out, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	log.Info("embedded broker: a partition retention emptied keeps its offsets", "dir", filepath.Base(dir), "offset", hwm)
	return nil
}
