using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign quality MODEL</c>: the sample-quality figures of a model with an evaluator (issue #6): evaluator class
/// histogram, mean confidence and Fréchet distance of evaluator features to the test set, with the real-image floor.
/// </summary>
internal static class QualityCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Model folder with evaluator/ (model.onnx with reward.json, classes.json; reference_mean.npy, reference_cov.npy and real_u8.npy optional: the Fréchet distance and its floor)." };
        var count = new Option<int>("--count") { Description = "Samples to generate and evaluate.", DefaultValueFactory = _ => 2000 };
        var steps = new Option<int>("--steps") { Description = "Denoising steps.", DefaultValueFactory = _ => 50 };
        var sampler = new Option<string?>("--sampler") { Description = "Sampler (default: the config's)." };
        var seed = new Option<long>("--seed") { Description = "Sample i uses noise stream seed+i.", DefaultValueFactory = _ => 0 };
        var batch = RuntimeOptions.Batch();
        var samples = new Option<string?>("--samples") { Description = "Evaluate these samples (.npy or a run folder) instead of generating." };
        var evaluatorDir = new Option<string?>("--evaluator") { Description = "Evaluator folder (default MODEL/evaluator): any ONNX classifier with a reward card (reward.json: 'output' = the logits, optional 'features')." };
        var output = new Option<string?>("--out") { Description = "Write the figures as JSON to this file." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing --out file." };
        var writeReference = new Option<string?>("--write-reference") { Description = "Developers: compute the reference feature statistics from these real images (.npy, values in [−1, 1] or bytes 0..255) into the evaluator folder, then exit." };
        var command = new Command("quality", "Sample quality of a model: evaluator class histogram, confidence and Fréchet distance to the test set.")
        {
            model, count, steps, sampler, seed, batch, samples, evaluatorDir, output, overwrite, writeReference,
        };
        var runtime = new RuntimeOptions();
        foreach (var option in runtime.All) command.Options.Add(option);
        command.SetAction(parse =>
        {
            string modelPath = parse.GetValue(model)!;
            string dir = parse.GetValue(evaluatorDir) ?? Path.Combine(Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(modelPath) ?? ".", "evaluator");
            if (!Directory.Exists(dir)) throw new ConfigException($"{dir}: no evaluator folder (give --evaluator DIR)");
            var options = runtime.For(parse);

            if (parse.GetValue(writeReference) is { } realPath)
            {
                // Needs only the evaluator, so the reference can be made before the diffusion model exists.
                using var referenceEvaluator = new ImageEvaluator(dir, options);
                if (!referenceEvaluator.HasFeatures) throw new ConfigException($"{dir}: the evaluator has no feature output ('features' in its reward.json), so there are no statistics to write");
                var shape = referenceEvaluator.SampleShape;
                var real = ReadImages(realPath, shape);
                var stats = FeatureStatistics.Of(referenceEvaluator.Evaluate(real.Data, real.Rows, shape));
                NpyFile.Write(Path.Combine(dir, "reference_mean.npy"), stats.Mean.Select(v => (float)v).ToArray(), [stats.Mean.Length]);
                NpyFile.Write(Path.Combine(dir, "reference_cov.npy"), stats.Covariance.Select(v => (float)v).ToArray(), [stats.Mean.Length, stats.Mean.Length]);
                Console.WriteLine($"wrote reference statistics of {real.Rows} images to {dir}");
                return 0;
            }

            if (parse.GetValue(output) is { } target && File.Exists(target) && !parse.GetValue(overwrite))
                throw new UsageException($"--out {target}: exists; pass --overwrite to replace it");
            var located = DiffusionModel.Locate(modelPath);
            // A Stable-Diffusion-shaped model is sampled at its empty prompt and its latents decoded (DESIGN §9): the evaluator
            // sees images, in the decoder's [−1, 1].
            using var opened = ConditionedModel.Open(located, null, options);
            var sampleShape = opened.OutputShape;
            using var evaluator = new ImageEvaluator(dir, options, sampleShape, located.IsLatent ? null : located.DataRange);
            // The Fréchet distance needs the evaluator's features and the real images' statistics; without them the
            // class histogram and confidence are still measured.
            var reference = evaluator.HasFeatures ? ReadReference(dir) : null;
            float[] data;
            int n;
            JsonObject generation = new();
            if (parse.GetValue(samples) is { } given)
            {
                var set = UsageException.ForFlag("--samples", () => SampleSetReader.Read(given));
                if (!set.SampleShape.SequenceEqual(evaluator.SampleShape))
                    throw new UsageException($"--samples {given}: samples of shape [{string.Join(", ", set.SampleShape)}], the evaluator takes [{string.Join(", ", evaluator.SampleShape)}]");
                if (set.Count < 2) throw new UsageException($"--samples {given}: {set.Count} sample; the Fréchet distance needs at least 2");
                (data, n) = (set.Samples, set.Count);
                generation["samples"] = given;
            }
            else
            {
                n = GenerateCommand.Positive(parse.GetValue(count), "--count");
                var s = GenerateCommand.CreateSampler(parse.GetValue(sampler), located.Config, GenerateCommand.Positive(parse.GetValue(steps), "--steps"), 0);
                var request = new GenerationRequest { Count = n, BatchSize = GenerateCommand.Positive(parse.GetValue(batch), "--batch"), Seed = parse.GetValue(seed) };
                var result = ProgressReporter.Run("generate", progress => Generation.Run(opened.Denoiser, s, request, progress));
                data = opened.Decode(result.Samples, result.Count);
                generation["sampler"] = s.Name;
                generation["steps"] = s.Steps;
                generation["seed"] = request.Seed;
                generation["seconds"] = result.TotalTime.TotalSeconds;
            }
            var quality = SampleQuality.Measure(evaluator.Evaluate(data, n, sampleShape), reference);
            string realPathInDir = Path.Combine(dir, "real_u8.npy");
            // The real-image floor is for samples of the real images' own shape (a latent model's decoded images may differ).
            var realImages = File.Exists(realPathInDir) && NpyFile.Read(realPathInDir).Shape.AsSpan(1).SequenceEqual(sampleShape.ToArray())
                ? ReadImages(realPathInDir, sampleShape) : null;
            var floor = realImages is null ? null : SampleQuality.Measure(evaluator.Evaluate(realImages.Data, realImages.Rows, sampleShape), reference);

            var names = evaluator.ClassNames.Length == quality.ClassShares.Length ? evaluator.ClassNames
                : Enumerable.Range(0, quality.ClassShares.Length).Select(c => c.ToString(CultureInfo.InvariantCulture)).ToArray();
            Console.WriteLine($"{n} samples of {located.OnnxPath}, evaluator {dir}:");
            for (int c = 0; c < names.Length; c++)
                Console.WriteLine($"  {names[c],-12} {quality.ClassShares[c] * 100,6:F1} %" + (floor is null ? "" : $"   (real: {floor.ClassShares[c] * 100:F1} %)"));
            Console.WriteLine($"  largest deviation from {100.0 / names.Length:F0} %: {quality.LargestDeviationPoints:F1} points");
            Console.WriteLine($"  mean confidence     {quality.MeanConfidence:F3}" + (floor is null ? "" : $"   (real: {floor.MeanConfidence:F3})"));
            Console.WriteLine(quality.FrechetDistance is { } frechet
                ? $"  Fréchet distance    {frechet:F2}" + (floor?.FrechetDistance is { } f ? $"   (real-image floor, {floor.Count} training images: {f:F2})" : "")
                : $"  Fréchet distance    n/a ({(evaluator.HasFeatures ? "no reference statistics: reference_mean.npy / reference_cov.npy" : "the evaluator has no feature output")})");
            var figures = new JsonObject
            {
                ["model"] = located.OnnxPath,
                ["generation"] = generation,
                ["count"] = n,
                ["class_shares"] = new JsonObject(names.Select((name, c) => KeyValuePair.Create(name, (JsonNode?)quality.ClassShares[c]))),
                ["largest_deviation_points"] = quality.LargestDeviationPoints,
                ["mean_confidence"] = quality.MeanConfidence,
                ["frechet_distance"] = quality.FrechetDistance,
                ["real_floor"] = floor is null ? null : new JsonObject { ["count"] = floor.Count, ["frechet_distance"] = floor.FrechetDistance, ["mean_confidence"] = floor.MeanConfidence },
                ["reference_count"] = reference?.Count,
            };
            if (parse.GetValue(output) is { } path) ReportJson.WriteFile(path, figures);
            return 0;
        });
        return command;
    }

    /// <summary>Reads images from .npy: values in [−1, 1], or bytes 0..255 (any value above 1), which are mapped to [−1, 1].</summary>
    internal static NpyArray ReadImages(string path, IReadOnlyList<int> shape)
    {
        var array = NpyFile.Read(path);
        int size = shape.Aggregate(1, (a, b) => a * b);
        if (array.RowSize != size) throw new ConfigException($"{path}: shape [{string.Join(", ", array.Shape)}], expected [N, {string.Join(", ", shape)}]");
        if (array.Data.Any(v => v > 1.0001f))
            for (int i = 0; i < array.Data.Length; i++) array.Data[i] = array.Data[i] / 127.5f - 1f;
        return array;
    }

    private static FeatureStatistics? ReadReference(string dir)
    {
        string meanPath = Path.Combine(dir, "reference_mean.npy"), covPath = Path.Combine(dir, "reference_cov.npy");
        if (!File.Exists(meanPath) && !File.Exists(covPath)) return null;
        if (!File.Exists(meanPath) || !File.Exists(covPath))
            throw new ConfigException($"{dir}: has only one of reference_mean.npy / reference_cov.npy (make both with quality --write-reference TEST_IMAGES.npy)");
        var mean = NpyFile.Read(meanPath).Data.Select(v => (double)v).ToArray();
        var cov = NpyFile.Read(covPath).Data.Select(v => (double)v).ToArray();
        if (cov.Length != mean.Length * mean.Length) throw new ConfigException($"{covPath}: expected [{mean.Length}, {mean.Length}]");
        return new FeatureStatistics(mean, cov, 10000);
    }
}
