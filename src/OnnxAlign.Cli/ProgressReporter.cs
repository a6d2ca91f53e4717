using OnnxAlign.Sampling;
using Spectre.Console;

namespace OnnxAlign.Cli;

/// <summary>A progress bar on a terminal; plain progress lines (every 10 %) when output is redirected.</summary>
internal static class ProgressReporter
{
    public static T Run<T>(string title, Func<Action<GenerationProgress>, T> work) => RunStages(stage => work(stage(title)));

    /// <summary>
    /// One call of several stages (a dual, then its tilt's samples): <paramref name="work"/> calls the stage function
    /// with a stage's title as the stage begins and reports that stage's progress to what it returns; each stage has its
    /// own bar (its own lines when output is redirected), and a new stage completes the one before it.
    /// </summary>
    public static T RunStages<T>(Func<Func<string, Action<GenerationProgress>>, T> work)
    {
        if (Plain)
            return work(Lines);
        T result = default!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask? current = null;
                result = work(title =>
                {
                    if (current is not null) current.Value = 1.0;
                    var task = current = ctx.AddTask(title, maxValue: 1.0);
                    return p => task.Value = p.StepsTotal == 0 ? 1.0 : (double)p.StepsDone / p.StepsTotal;
                });
                if (current is not null) current.Value = 1.0;
            });
        return result;
    }

    /// <summary>Plain lines instead of bars: output redirected, or CI.</summary>
    private static bool Plain => Console.IsErrorRedirected || Console.IsOutputRedirected || Environment.GetEnvironmentVariable("CI") == "true";

    /// <summary>A line of standard output while stages run: above the bars on a terminal, else as it is.</summary>
    public static void WriteLine(string text)
    {
        if (Plain) Console.WriteLine(text);
        else AnsiConsole.WriteLine(text);
    }

    /// <summary>A stage's plain lines: one per 10 % of the steps, and the final one once every sample is finished.</summary>
    private static Action<GenerationProgress> Lines(string title)
    {
        int lastDecile = -1, lastDone = -1;
        return p =>
        {
            int decile = p.StepsTotal == 0 ? 10 : (int)(10 * p.StepsDone / p.StepsTotal);
            bool finished = p.SamplesDone == p.SamplesTotal && lastDone != p.SamplesDone;
            if (decile == lastDecile && !finished) return;
            lastDecile = decile;
            lastDone = p.SamplesDone;
            Console.Error.WriteLine($"{title}: {decile * 10}% ({p.SamplesDone}/{p.SamplesTotal} samples)");
        };
    }
}
