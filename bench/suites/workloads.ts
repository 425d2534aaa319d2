import { createContainerSuite, type ContainerCase } from '../container-suite';
import { SINGLE_CONTAINER_TARGETS } from '../container-targets';
import { PAYLOAD_DIR } from '../payload';
import { WORKLOADS_RECIPE } from '../workloads-image';

/**
 * The thesis' real workloads (5.3), which the original repository lacks: image processing,
 * MapReduce word count, ML inference and video, each reading its input from /tmp and writing its
 * intermediate and output files there. Inputs are generated in an untimed prepare step inside the
 * container (PIL, a seeded text generator, scikit-learn's bundled digits, ffmpeg's lavfi testsrc).
 */
export function workloadsCases(quick: boolean): ContainerCase[] {
  const py = (script: string, ...args: string[]): string[] => ['python3', `${PAYLOAD_DIR}/${script}`, ...args];
  const image = WORKLOADS_RECIPE.name;
  const phases = ['cold', 'warm'] as const;
  const imageCount = quick ? 6 : 16;
  const imagePx = quick ? 768 : 1536;
  const textMiB = quick ? 24 : 96;
  const rounds = quick ? 40 : 200;
  const clipS = quick ? 4 : 15;
  return [
    {
      workload: 'image',
      parameters: { primary: 'seconds', images: imageCount, px: imagePx },
      image,
      memoryMiB: 192,
      prepare: py('image.py', 'prepare', '/tmp', String(imagePx), String(imageCount)),
      argv: py('image.py', 'run', '/tmp', String(imageCount)),
      phases,
      timeoutMs: 240_000,
    },
    {
      workload: 'mapreduce',
      parameters: { primary: 'seconds', text_mib: textMiB, mappers: 2, reducers: 1 },
      image,
      memoryMiB: 192,
      prepare: py('mapreduce.py', 'prepare', '/tmp', String(textMiB)),
      argv: py('mapreduce.py', 'run', '/tmp'),
      phases,
      timeoutMs: 240_000,
    },
    {
      workload: 'ml-inference',
      parameters: { primary: 'seconds', model: 'mlp-256-128', data: 'sklearn-digits', rounds },
      image,
      memoryMiB: 384,
      prepare: py('ml.py', 'prepare', '/tmp'),
      argv: py('ml.py', 'run', '/tmp', String(rounds)),
      phases,
      timeoutMs: 240_000,
    },
    {
      workload: 'video',
      parameters: { primary: 'seconds', clip_s: clipS, size: '640x480', fps: 25 },
      image,
      memoryMiB: 192,
      prepare: ['/bin/sh', `${PAYLOAD_DIR}/video.sh`, 'prepare', '/tmp', String(clipS)],
      argv: ['/bin/sh', `${PAYLOAD_DIR}/video.sh`, 'run', '/tmp'],
      phases,
      timeoutMs: 240_000,
    },
  ];
}

export const workloadsSuite = createContainerSuite({
  name: 'workloads',
  description: 'real workloads in containers: image greyscale (PIL), MapReduce word count, MLP inference on digits (sklearn), ffmpeg greyscale',
  defaultTimeCapS: { quick: 420, full: 3600 },
  defaultTargets: SINGLE_CONTAINER_TARGETS,
  images: [WORKLOADS_RECIPE],
  cases: workloadsCases,
});
