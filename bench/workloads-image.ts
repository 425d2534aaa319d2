import { FUNCTION_RECIPE, registerRecipe, type ImageRecipe } from '../engine/index';

/**
 * The image the `workloads` suite runs in: the function image's packages plus the Debian packages the
 * four real workloads use. Data is generated (ffmpeg lavfi, PIL, text) or shipped by a package
 * (scikit-learn's bundled digits), so nothing is downloaded but .debs. The workload programs themselves
 * are copied in at container start (bench/workloads/), so editing one does not rebuild this image.
 */
export const WORKLOADS_RECIPE: ImageRecipe = {
  name: 'workloads',
  base: 'debootstrap',
  suite: 'bookworm',
  packages: [...FUNCTION_RECIPE.packages, 'python3-numpy', 'python3-sklearn', 'python3-pil', 'ffmpeg'],
  steps: FUNCTION_RECIPE.steps,
  env: { ...FUNCTION_RECIPE.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' },
};

registerRecipe(WORKLOADS_RECIPE);
