using System.CommandLine;
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
                var stats = SampleQuality.WriteReference(referenceEvaluator, realPath);
                Console.WriteLine($"wrote reference statistics of {stats.Count} images to {dir}");
                return 0;
            }

            if (parse.GetValue(output) is { } target) OutputFile.Check(target, parse.GetValue(overwrite), "quality.json");
            var located = DiffusionModel.Locate(modelPath);
            // A Stable-Diffusion-shaped model is sampled at its empty prompt and its latents decoded (DESIGN §9): the evaluator
            // sees images, in the decoder's [−1, 1].
            using var opened = ConditionedModel.Open(located, null, options);
            using var evaluator = new ImageEvaluator(dir, options, opened.OutputShape, located.IsLatent ? null : located.DataRange);
            QualityGeneration generation;
            QualityMeasurement measured;
            if (parse.GetValue(samples) is { } given)
            {
                var set = UsageException.ForFlag("--samples", () => SampleSetReader.Read(given));
                if (!set.SampleShape.SequenceEqual(evaluator.SampleShape))
                    throw new UsageException($"--samples {given}: samples of shape [{string.Join(", ", set.SampleShape)}], the evaluator takes [{string.Join(", ", evaluator.SampleShape)}]");
                if (set.Count < 2) throw new UsageException($"--samples {given}: {set.Count} sample; the Fréchet distance needs at least 2");
                generation = QualityGeneration.Given(given);
                measured = SampleQuality.Evaluate(evaluator, set.Samples, set.Count);
            }
            else
            {
                int n = GenerateCommand.Positive(parse.GetValue(count), "--count");
                var s = GenerateCommand.CreateSampler(parse.GetValue(sampler), located.Config, GenerateCommand.Positive(parse.GetValue(steps), "--steps"), 0);
                var request = new GenerationRequest { Count = n, BatchSize = GenerateCommand.Positive(parse.GetValue(batch), "--batch"), Seed = parse.GetValue(seed) };
                (generation, measured) = ProgressReporter.Run("generate", progress =>
                    SampleQuality.Run(opened, s, request, evaluator, new InlineProgress<GenerationProgress>(progress)));
            }
            var report = QualityReport.Of(located.OnnxPath, generation, measured);
            var (quality, floor, names) = (measured.Samples, measured.RealFloor, measured.ClassNames);

            Console.WriteLine($"{quality.Count} samples of {located.OnnxPath}, evaluator {dir}:");
            for (int c = 0; c < names.Count; c++)
                Console.WriteLine($"  {names[c],-12} {quality.ClassShares[c] * 100,6:F1} %" + (floor is null ? "" : $"   (real: {floor.ClassShares[c] * 100:F1} %)"));
            Console.WriteLine($"  largest deviation from {100.0 / names.Count:F0} %: {quality.LargestDeviationPoints:F1} points");
            Console.WriteLine($"  mean confidence     {quality.MeanConfidence:F3}" + (floor is null ? "" : $"   (real: {floor.MeanConfidence:F3})"));
            Console.WriteLine(quality.FrechetDistance is { } frechet
                ? $"  Fréchet distance    {frechet:F2}" + (floor?.FrechetDistance is { } f ? $"   (real-image floor, {floor.Count} training images: {f:F2})" : "")
                : $"  Fréchet distance    n/a ({(evaluator.HasFeatures ? "no reference statistics: reference_mean.npy / reference_cov.npy" : "the evaluator has no feature output")})");
            if (parse.GetValue(output) is { } path) ReportJson.WriteFile(path, ReportJson.ToNode(report));
            return 0;
        });
        return command;
    }
}
