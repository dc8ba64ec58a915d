"""The training process's lifecycle without a viewer (nothing in ui/training_process.py imports Qt)."""

import subprocess
import sys
import textwrap

KILLED_BEFORE_READING_ITS_JOB = textwrap.dedent("""
    import numpy as np
    from napari_semiseg.core.volume import Volume
    from napari_semiseg.ui.training_process import PredictionJob, TrainingProcess

    process = TrainingProcess()
    process.start()
    # a job far larger than a pipe holds: the queue's feeder thread is still writing it when
    # the child, still importing torch, is killed
    process.submit(PredictionJob("no-model", Volume(np.zeros((16, 256, 256), np.float32)), "load"))
    process.close()
    print("closed", flush=True)
""")


def test_closing_a_process_killed_before_it_read_its_job_lets_the_program_exit():
    """Defect: the viewer closed right after Start training never exited. The queue's feeder
    thread stayed blocked writing the job into the killed child's pipe, and Python waits for
    that thread at exit."""
    result = subprocess.run([sys.executable, "-c", KILLED_BEFORE_READING_ITS_JOB], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closed"
