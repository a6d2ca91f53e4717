using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign bench MODEL --black-box</c> (issue #18): runs the library's <see cref="BlackBoxBenchmark"/> (DESIGN §8's
/// methods on a network reward at equal network evaluations against an importance-weighted reference) with a bar per run
/// and a line per figure as its progress reports them, then the bound and, when asked, the plot of ESS per network
/// evaluation against λ.
/// </summary>
internal static class BlackBoxBench
{
    public static BlackBoxBenchmarkResult Run(string model, string reward, BlackBoxBenchmarkSettings settings, DenoiserOptions options, string? plotPath)
    {
        var result = ProgressReporter.RunStages(stage =>
        {
            Action<GenerationProgress>? bar = null;
            return BlackBoxBenchmark.Run(model, reward, settings, options, new InlineProgress<BlackBoxBenchmarkProgress>(progress =>
            {
                switch (progress)
                {
                    case BlackBoxCostMeasured c:
                        ProgressReporter.WriteLine($"reward network {c.RewardMsPerSample:F3} ms per sample, diffusion network {c.NetworkMsPerSampleStep:F3} ms per sample and step ({c.RewardMsPerSample / c.NetworkMsPerSampleStep:F2}×)");
                        break;
                    case BlackBoxReferenceStarted r:
                        ProgressReporter.WriteLine($"reference: {r.BaseSamples} base samples ({r.Sampler}, {r.Steps} steps) weighted by e^(r/λ) …");
                        bar = stage("reference");
                        break;
                    case BlackBoxSampling p:
                        bar?.Invoke(p.Generation);
                        break;
                    case BlackBoxReferenceWeighted { Lambda: var lambda, Reference: var reference }:
                        ProgressReporter.WriteLine($"λ = {lambda:G3}: reference E_π[r] {reference.MeanReward.Value:F4} ± {reference.MeanReward.StandardError:F4}, class rate {reference.ClassRate.Value:P1} ± {reference.ClassRate.StandardError:P1} " +
                             $"(ESS {reference.EffectiveSampleSize:F0} of {reference.BaseSamples})");
                        break;
                    case BlackBoxMethodStarted m:
                        bar = stage($"λ {m.Lambda:G3} {BlackBoxAlignment.Name(m.Method)}");
                        break;
                    case BlackBoxMethodFinished { Row: var row }:
                        bar = null;
                        ProgressReporter.WriteLine($"  {row.Method,-12} {row.NetworkEvaluations,8} network evals, {Figures(row, settings.BestOf)}");
                        break;
                }
            }));
        });
        double bound = result.EssPerEvaluationBound;
        Console.WriteLine($"bound: ESS per network evaluation ≤ 1/steps = {bound * 1e3:F1} per 1000 evaluations for any method ({bound * 500:F1} for the tilted ones, two calls per step)");
        if (plotPath is not null) Plot(plotPath, result);
        return result;
    }

    /// <summary>A method's figures: the weighted methods' ESS, E[r] with its z and class rate; best-of-N's E[r] and class rate.</summary>
    private static string Figures(BlackBoxMethodRow row, int bestOf) => row.EssPerNetworkEvaluation is { } essPerEvaluation
        ? $"ESS {row.EffectiveSampleSize,7:F1} of {row.Particles,5} ({essPerEvaluation * 1e3,7:F3} per 1000 evals), E[r] {row.MeanReward.Value,8:F4} ± {row.MeanReward.StandardError:F4} " +
          $"(z {row.MeanRewardZ,5:F1}), class rate {row.ClassRate.Value,6:P1}"
        : $"{row.Returned} samples of best-of-{bestOf} (no weights), E[r] {row.MeanReward.Value,8:F4}, class rate {row.ClassRate.Value,6:P1}";

    /// <summary>ESS per network evaluation against λ, one series per weighted method, and the bound.</summary>
    private static void Plot(string path, BlackBoxBenchmarkResult result)
    {
        var plot = new ScottPlot.Plot();
        var limit = plot.Add.HorizontalLine(Math.Log10(result.EssPerEvaluationBound));
        limit.LinePattern = ScottPlot.LinePattern.Dashed;
        limit.LegendText = "bound 1/steps (any method)";
        var series = result.Rows
            .SelectMany(row => row.Methods.Where(m => m.EssPerNetworkEvaluation is not null).Select(m => (row.Lambda, Method: m.Method, Ess: m.EssPerNetworkEvaluation!.Value)))
            .GroupBy(p => p.Method);
        foreach (var points in series)
        {
            var scatter = plot.Add.Scatter(points.Select(p => Math.Log10(p.Lambda)).ToArray(), points.Select(p => Math.Log10(Math.Max(p.Ess, 1e-9))).ToArray());
            scatter.LegendText = points.Key;
        }
        plot.Title("ESS per network evaluation against λ");
        plot.XLabel("log10 λ");
        plot.YLabel("log10 (ESS / network evaluations)");
        plot.ShowLegend();
        Panels.Save(path, [plot], 640);
    }
}
